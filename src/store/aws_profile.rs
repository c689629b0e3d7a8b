//! AWS shared config and credentials files (`~/.aws/credentials`, `~/.aws/config`): the static
//! settings of one profile, used for S3 stores where the environment names none.

use std::path::PathBuf;

/// Settings of the selected profile as object_store S3 config keys, each applied only where
/// the environment (`env`) does not already set it. `AWS_PROFILE` names the profile (else
/// `default`); `AWS_SHARED_CREDENTIALS_FILE` and `AWS_CONFIG_FILE` move the files.
/// A profile named explicitly must exist; one that only delegates (SSO, roles, a credential
/// process) is refused, since pgcryptfs cannot follow it.
pub fn settings(env: &dyn Fn(&str) -> Option<String>) -> Result<Vec<(String, String)>, String> {
    let named = env("AWS_PROFILE").filter(|p| !p.is_empty());
    let profile = named.clone().unwrap_or_else(|| "default".to_string());
    let home = env("HOME").map(PathBuf::from);
    let file = |var: &str, name: &str| env(var).map(PathBuf::from).or_else(|| home.as_ref().map(|h| h.join(".aws").join(name)));
    let creds_path = file("AWS_SHARED_CREDENTIALS_FILE", "credentials");
    let config_path = file("AWS_CONFIG_FILE", "config");
    let creds = read(&creds_path)?.map(|t| section(&t, &profile)).transpose()?.flatten();
    let config_section = if profile == "default" { "default".to_string() } else { format!("profile {profile}") };
    let config = read(&config_path)?.map(|t| section(&t, &config_section)).transpose()?.flatten();
    if creds.is_none() && config.is_none() {
        return match named {
            Some(p) => Err(format!(
                "AWS_PROFILE={p}, but neither {} nor {} has that profile",
                show(&creds_path),
                show(&config_path)
            )),
            None => Ok(Vec::new()),
        };
    }
    // The credentials file wins over the config file for the same key, as in the AWS CLI.
    let mut all = config.unwrap_or_default();
    all.extend(creds.unwrap_or_default());
    let get = |k: &str| all.iter().rev().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    let mut out = Vec::new();
    let env_has_keys = env("AWS_ACCESS_KEY_ID").is_some();
    match (get("aws_access_key_id"), get("aws_secret_access_key")) {
        _ if env_has_keys => {}
        (Some(id), Some(secret)) => {
            out.push(("aws_access_key_id".to_string(), id));
            out.push(("aws_secret_access_key".to_string(), secret));
            if let Some(t) = get("aws_session_token") {
                out.push(("aws_session_token".to_string(), t));
            }
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(format!("AWS profile {profile} has only one of aws_access_key_id and aws_secret_access_key"));
        }
        (None, None) => {
            if let Some(k) = ["credential_process", "role_arn", "sso_session", "sso_start_url"].iter().find(|k| get(k).is_some()) {
                return Err(format!(
                    "AWS profile {profile} gets its credentials through {k}, which pgcryptfs does not follow; \
                     export AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), or use credentials_file="
                ));
            }
        }
    }
    if env("AWS_REGION").or_else(|| env("AWS_DEFAULT_REGION")).is_none()
        && let Some(r) = get("region")
    {
        out.push(("aws_region".to_string(), r));
    }
    if env("AWS_ENDPOINT_URL").or_else(|| env("AWS_ENDPOINT")).is_none()
        && let Some(e) = get("endpoint_url")
    {
        out.push(("aws_endpoint".to_string(), e));
    }
    Ok(out)
}

/// Largest AWS config or credentials file read (real ones are a few KiB).
pub const MAX_FILE_BYTES: u64 = 1 << 20;

/// The text of an AWS file; `None` if it is absent or unreadable (as the AWS CLI skips it),
/// an error if it is larger than `MAX_FILE_BYTES`.
fn read(p: &Option<PathBuf>) -> Result<Option<String>, String> {
    use std::io::Read;
    let Some(f) = p.as_ref().and_then(|p| std::fs::File::open(p).ok()) else { return Ok(None) };
    let mut text = String::new();
    if f.take(MAX_FILE_BYTES + 1).read_to_string(&mut text).is_err() {
        return Ok(None);
    }
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(format!("{} is larger than {MAX_FILE_BYTES} bytes; not an AWS config file", show(p)));
    }
    Ok(Some(text))
}

fn show(p: &Option<PathBuf>) -> String {
    p.as_ref().map_or("(no HOME)".to_string(), |p| p.display().to_string())
}

/// The `key = value` pairs of `[name]` in an INI-style AWS file (keys lower-cased; `#` and `;`
/// comments; indented lines are sub-settings such as `s3 =` blocks and are skipped). `None`
/// if the section is absent.
pub fn section(text: &str, name: &str) -> Result<Option<Vec<(String, String)>>, String> {
    let mut found = None;
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if let Some(h) = l.strip_prefix('[') {
            let h = h.strip_suffix(']').ok_or_else(|| format!("malformed section header {l:?} in an AWS config file"))?;
            inside = h.split_whitespace().collect::<Vec<_>>().join(" ") == name;
            if inside {
                found.get_or_insert_with(Vec::new);
            }
            continue;
        }
        if inside && let Some((k, v)) = l.split_once('=') {
            found.get_or_insert_with(Vec::new).push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn run(vars: &[(&str, &str)]) -> Result<Vec<(String, String)>, String> {
        let map: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        settings(&|k| map.get(k).cloned())
    }

    #[test]
    fn profiles_from_the_shared_files() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join(".aws")).unwrap();
        std::fs::write(
            d.path().join(".aws/credentials"),
            "# keys\n[default]\naws_access_key_id = AKDEF\naws_secret_access_key = SKDEF\n\n\
             [backup]\naws_access_key_id=AKB\naws_secret_access_key=SKB\naws_session_token = TOK\n",
        )
        .unwrap();
        std::fs::write(
            d.path().join(".aws/config"),
            "[default]\nregion = eu-west-1\n[profile backup]\nregion = us-east-2\nendpoint_url = http://minio:9000\n\
             s3 =\n  addressing_style = path\n[profile sso]\nsso_session = corp\n",
        )
        .unwrap();
        let home = d.path().to_str().unwrap();
        let pairs = |v: Vec<(String, String)>| v.into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>();
        assert_eq!(
            pairs(run(&[("HOME", home)]).unwrap()),
            ["aws_access_key_id=AKDEF", "aws_secret_access_key=SKDEF", "aws_region=eu-west-1"]
        );
        assert_eq!(
            pairs(run(&[("HOME", home), ("AWS_PROFILE", "backup")]).unwrap()),
            [
                "aws_access_key_id=AKB",
                "aws_secret_access_key=SKB",
                "aws_session_token=TOK",
                "aws_region=us-east-2",
                "aws_endpoint=http://minio:9000"
            ]
        );
        // The environment wins.
        let env_keys = run(&[("HOME", home), ("AWS_PROFILE", "backup"), ("AWS_ACCESS_KEY_ID", "x"), ("AWS_REGION", "r")]);
        assert_eq!(pairs(env_keys.unwrap()), ["aws_endpoint=http://minio:9000"]);
        let missing = run(&[("HOME", home), ("AWS_PROFILE", "nope")]).unwrap_err();
        assert!(missing.contains("AWS_PROFILE=nope") && missing.contains(".aws/credentials"), "{missing}");
        let sso = run(&[("HOME", home), ("AWS_PROFILE", "sso")]).unwrap_err();
        assert!(sso.contains("sso_session"), "{sso}");
        // No files and no profile named: nothing, no error.
        assert!(run(&[("HOME", "/nonexistent")]).unwrap().is_empty());
        // Files moved by the environment.
        let moved = d.path().join("creds");
        std::fs::write(&moved, "[default]\naws_access_key_id=A\naws_secret_access_key=B\n").unwrap();
        let v = run(&[("AWS_SHARED_CREDENTIALS_FILE", moved.to_str().unwrap()), ("AWS_CONFIG_FILE", "/none")]).unwrap();
        assert_eq!(pairs(v), ["aws_access_key_id=A", "aws_secret_access_key=B"]);
    }

    #[test]
    fn oversized_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let big = d.path().join("credentials");
        std::fs::write(&big, vec![b'#'; MAX_FILE_BYTES as usize + 1]).unwrap();
        let e = run(&[("AWS_SHARED_CREDENTIALS_FILE", big.to_str().unwrap()), ("AWS_CONFIG_FILE", "/none")]).unwrap_err();
        assert!(e.contains("larger than"), "{e}");
    }
}
