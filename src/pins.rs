//! What this host has seen of each vault location, and what a restore demands: the vault's
//! fingerprint and its newest head (seq, hash). A host refuses an older (rolled back) or forked
//! head and a different vault at a location it knows; a fingerprint retired by a rekey is never
//! accepted again. Receipts carry the same three values from a backup host to a restore host.
//! Pins are small text files under `<cache root>/pins/`, written link-safe.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::cache::Dir;
use crate::crypto::{self, Secret32};
use crate::format::{self, Id};

/// A vault's identity: a commitment to its vault id and master key (through the metadata
/// subkey). Anyone can read the vault id; only the master key's holder can compute this, so a
/// vault forged with an OpenPGP certificate (another master key) has another fingerprint.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 16]);

impl Fingerprint {
    /// BLAKE2b-256("pgcfs-vault-fingerprint-v1" ‖ vault id ‖ metadata subkey), first 16 bytes.
    pub fn of(vault_id: &Id, meta: &Secret32) -> Self {
        let mut input = crypto::SecretBytes(Vec::with_capacity(26 + 16 + 32));
        input.0.extend_from_slice(b"pgcfs-vault-fingerprint-v1");
        input.0.extend_from_slice(vault_id);
        input.0.extend_from_slice(meta.expose());
        let h = crypto::hash32(&input.0);
        Fingerprint(h[..16].try_into().expect("16 bytes"))
    }

    /// Parses 32 hex digits; dashes, colons and spaces between them are ignored.
    pub fn parse(s: &str) -> Result<Self, String> {
        let digits: String = s.chars().filter(|c| !matches!(c, '-' | ':' | ' ')).collect();
        let bytes = parse_hex(&digits).filter(|b| b.len() == 16).ok_or_else(|| {
            format!("{s:?} is not a vault fingerprint (32 hex digits, as `pgcryptfs init` and `key list` print it)")
        })?;
        Ok(Fingerprint(bytes.try_into().expect("16 bytes")))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex = format::hex(&self.0);
        let groups: Vec<&str> = (0..8).map(|i| &hex[i * 4..i * 4 + 4]).collect();
        write!(f, "{}", groups.join("-"))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

fn parse_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

/// A vault state: whose it is and how far its metadata chain reaches.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Receipt {
    pub fingerprint: Fingerprint,
    pub seq: u64,
    pub hash: [u8; 32],
}

const RECEIPT_PREFIX: &str = "pgcfs-receipt-v1";

impl fmt::Display for Receipt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{RECEIPT_PREFIX}:{}:{}:{}", format::hex(&self.fingerprint.0), self.seq, format::hex(&self.hash))
    }
}

impl Receipt {
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a receipt (`{RECEIPT_PREFIX}:FINGERPRINT:SEQ:HASH`, as umount and sync print it)");
        let mut parts = s.trim().split(':');
        if parts.next() != Some(RECEIPT_PREFIX) {
            return Err(bad());
        }
        let (Some(fp), Some(seq), Some(hash), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let fingerprint = Fingerprint::parse(fp).map_err(|_| bad())?;
        let seq = seq.parse().map_err(|_| bad())?;
        let hash = parse_hex(hash).filter(|h| h.len() == 32).ok_or_else(bad)?;
        Ok(Receipt { fingerprint, seq, hash: hash.try_into().expect("32 bytes") })
    }

    /// Whether `found` is this state or a later one of the same vault. Later states cannot be
    /// told from forks by their head alone, but only the master key's holder can write any
    /// state that carries this fingerprint.
    pub fn admits(&self, found: &Receipt) -> Result<(), PinError> {
        if found.fingerprint != self.fingerprint {
            return Err(PinError::Replaced { pinned: self.fingerprint, found: found.fingerprint, what: "expected" });
        }
        if found.seq < self.seq {
            return Err(PinError::RolledBack { pinned: self.seq, found: found.seq, what: "expected" });
        }
        if found.seq == self.seq && found.hash != self.hash {
            return Err(PinError::Forked { seq: found.seq, what: "expected" });
        }
        Ok(())
    }
}

/// What a restore demands of the vault it opens (`--expect-fingerprint`, `--expect-receipt`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Expect {
    pub fingerprint: Option<Fingerprint>,
    pub receipt: Option<Receipt>,
}

impl Expect {
    /// `--accept-new-master-key` needs the fingerprint the rekey printed, named with
    /// `--expect-fingerprint`: a new key is taken only if the vault has that fingerprint.
    pub fn accepting(&self, accept_new: bool) -> Result<Option<Fingerprint>, PinError> {
        match (accept_new, self.fingerprint) {
            (false, _) => Ok(None),
            (true, Some(fp)) => Ok(Some(fp)),
            (true, None) => Err(PinError::AcceptNeedsFingerprint),
        }
    }

    pub fn check(&self, found: &Receipt) -> Result<(), PinError> {
        if let Some(fp) = self.fingerprint
            && fp != found.fingerprint
        {
            return Err(PinError::Replaced { pinned: fp, found: found.fingerprint, what: "expected" });
        }
        match &self.receipt {
            Some(r) => r.admits(found),
            None => Ok(()),
        }
    }
}

#[derive(Debug)]
pub enum PinError {
    /// Another vault (another master key) than the one pinned or expected.
    Replaced { pinned: Fingerprint, found: Fingerprint, what: &'static str },
    /// A vault whose master key a rekey retired: an old copy put back.
    Retired(Fingerprint),
    /// The metadata chain ends before a head seen earlier.
    RolledBack { pinned: u64, found: u64, what: &'static str },
    /// The same seq with another hash: a fork.
    Forked { seq: u64, what: &'static str },
    /// `--accept-new-master-key` without `--expect-fingerprint`.
    AcceptNeedsFingerprint,
    Io { path: PathBuf, source: io::Error },
}

impl fmt::Display for PinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinError::Replaced { pinned, found, what } if *what == "expected" => write!(
                f,
                "this is not the vault expected: its fingerprint is {found}, not {pinned} (the store may have been \
                 replaced with a vault an OpenPGP certificate alone can make)"
            ),
            PinError::Replaced { pinned, found, .. } => write!(
                f,
                "this is not the vault this host has used at that location: its fingerprint is {found}, not \
                 {pinned}. Either `pgcryptfs rekey` gave it a new master key (on another host), or the store was \
                 replaced with a vault an OpenPGP certificate alone can make. If you ran `pgcryptfs rekey`, it \
                 printed the new fingerprint: mount once with --accept-new-master-key --expect-fingerprint <that \
                 fingerprint>; otherwise do not use this vault"
            ),
            PinError::Retired(fp) => write!(
                f,
                "the vault's master key (fingerprint {fp}) was retired on this host, by a rekey (this host's, \
                 or one it accepted) or by an `init` here that replaced the vault: the store holds an old copy \
                 of a vault, put back. It is refused for good, and no option accepts it"
            ),
            PinError::AcceptNeedsFingerprint => write!(
                f,
                "--accept-new-master-key needs --expect-fingerprint FP, FP being the fingerprint `pgcryptfs rekey` \
                 printed: a new master key is accepted only if the vault has it (without it, a vault someone \
                 replaced in the store would be accepted too)"
            ),
            PinError::RolledBack { pinned, found, what } => write!(
                f,
                "the vault's metadata ends at segment {found}, but {} reaches segment {pinned}: the store was \
                 rolled back or truncated",
                if *what == "expected" { "the expected receipt" } else { "this host has seen it" }
            ),
            PinError::Forked { seq, what } => write!(
                f,
                "the vault's segment {seq} is not {}: the metadata chain was forked",
                if *what == "expected" { "the one the expected receipt names" } else { "the one this host has seen" }
            ),
            PinError::Io { path, source } => write!(f, "cannot use the pin {}: {source}", path.display()),
        }
    }
}

impl std::error::Error for PinError {}

/// One pin: what this host last saw at a location.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pin {
    location: String,
    seen: Receipt,
    /// Fingerprints a rekey replaced: never accepted again at this location.
    retired: Vec<Fingerprint>,
}

const PIN_MAGIC: &str = "pgcfs-pin v1";
/// A pin file holds a few lines; anything larger is not one.
const PIN_MAX_BYTES: usize = 16 << 10;
const MAX_RETIRED: usize = 64;

impl Pin {
    /// Retires `fp`; past `MAX_RETIRED`, the oldest retired fingerprints are forgotten (the newest
    /// are the copies most likely to be put back).
    fn retire(&mut self, fp: Fingerprint) {
        if !self.retired.contains(&fp) {
            self.retired.push(fp);
        }
        let excess = self.retired.len().saturating_sub(MAX_RETIRED);
        self.retired.drain(..excess);
    }

    fn encode(&self) -> String {
        let mut s = format!("{PIN_MAGIC}\nlocation {}\nstate {}\n", self.location.replace('\n', " "), self.seen);
        for r in &self.retired {
            s.push_str(&format!("retired {}\n", format::hex(&r.0)));
        }
        s
    }

    fn decode(text: &str) -> Option<Pin> {
        let mut lines = text.lines();
        if lines.next()? != PIN_MAGIC {
            return None;
        }
        let location = lines.next()?.strip_prefix("location ")?.to_string();
        let seen = Receipt::parse(lines.next()?.strip_prefix("state ")?).ok()?;
        let mut retired = Vec::new();
        for l in lines {
            retired.push(Fingerprint::parse(l.strip_prefix("retired ")?).ok()?);
        }
        (retired.len() <= MAX_RETIRED).then_some(Pin { location, seen, retired })
    }
}

/// The pins of one cache root.
pub struct Pins {
    dir: Dir,
}

impl Pins {
    /// Opens `<cache_root>/pins`, creating it (0700) if needed.
    pub fn open(cache_root: &Path) -> Result<Self, PinError> {
        let io = |source| PinError::Io { path: cache_root.join("pins"), source };
        let root = Dir::private(cache_root).map_err(io)?;
        Ok(Pins { dir: root.sub("pins").map_err(io)? })
    }

    fn name(location: &str) -> String {
        format::hex(&crypto::hash32(location.as_bytes())[..16])
    }

    fn load(&self, location: &str) -> Result<Option<Pin>, PinError> {
        let name = Self::name(location);
        let io = |source| PinError::Io { path: self.dir.path().join(&name), source };
        let bytes = match self.dir.read_small(&name, PIN_MAX_BYTES) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        let text = std::str::from_utf8(&bytes).ok();
        match text.and_then(Pin::decode).filter(|p| p.location == location.replace('\n', " ")) {
            Some(p) => Ok(Some(p)),
            None => Err(io(io::Error::new(io::ErrorKind::InvalidData, "not a pin file of this location (damaged?)"))),
        }
    }

    fn store(&self, pin: &Pin) -> Result<(), PinError> {
        let name = Self::name(&pin.location);
        self.dir
            .write_atomic(&name, pin.encode().as_bytes())
            .map_err(|source| PinError::Io { path: self.dir.path().join(&name), source })
    }

    /// Checks `found` against the pin of `location` and records it (trust on first use; the
    /// head only moves forward). `accept` (the fingerprint the operator named along with
    /// `--accept-new-master-key`) takes that one new fingerprint once (after a rekey elsewhere),
    /// retiring the pinned one; a retired fingerprint is refused regardless.
    pub fn check_and_record(&self, location: &str, found: &Receipt, accept: Option<Fingerprint>) -> Result<(), PinError> {
        let Some(mut pin) = self.load(location)? else {
            return self.store(&Pin { location: location.replace('\n', " "), seen: *found, retired: Vec::new() });
        };
        if pin.retired.contains(&found.fingerprint) {
            return Err(PinError::Retired(found.fingerprint));
        }
        if pin.seen.fingerprint != found.fingerprint {
            if accept != Some(found.fingerprint) {
                return Err(PinError::Replaced { pinned: pin.seen.fingerprint, found: found.fingerprint, what: "pinned" });
            }
            pin.retire(pin.seen.fingerprint);
            pin.seen = *found;
            return self.store(&pin);
        }
        if found.seq < pin.seen.seq {
            return Err(PinError::RolledBack { pinned: pin.seen.seq, found: found.seq, what: "pinned" });
        }
        if found.seq == pin.seen.seq {
            if found.hash != pin.seen.hash {
                return Err(PinError::Forked { seq: found.seq, what: "pinned" });
            }
            return Ok(());
        }
        pin.seen = *found;
        self.store(&pin)
    }

    /// After this host's `init` made a new vault at `location` (only an empty store is
    /// initialised, so this host made what is there): the new vault's first state is pinned,
    /// and a vault pinned there before (deleted since) is retired, so a copy of it put back is
    /// refused.
    pub fn initialised(&self, location: &str, first: &Receipt) -> Result<(), PinError> {
        let mut pin = match self.load(location) {
            Ok(Some(p)) => p,
            // A damaged pin file of this location is replaced: init knows what is there now.
            Ok(None) | Err(PinError::Io { .. }) => Pin { location: location.replace('\n', " "), seen: *first, retired: Vec::new() },
            Err(e) => return Err(e),
        };
        if pin.seen.fingerprint != first.fingerprint {
            pin.retire(pin.seen.fingerprint);
        }
        pin.seen = *first;
        self.store(&pin)
    }

    /// After this host's rekey: `old` is retired for good and `new` is pinned.
    pub fn rekeyed(&self, location: &str, old: Fingerprint, new: &Receipt) -> Result<(), PinError> {
        let mut pin = self.load(location)?.unwrap_or(Pin { location: location.replace('\n', " "), seen: *new, retired: Vec::new() });
        for fp in [old, pin.seen.fingerprint] {
            if fp != new.fingerprint {
                pin.retire(fp);
            }
        }
        pin.seen = *new;
        self.store(&pin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(fp: u8, seq: u64, h: u8) -> Receipt {
        Receipt { fingerprint: Fingerprint([fp; 16]), seq, hash: [h; 32] }
    }

    /// A vault deleted and made again at one location by this host's `init` is pinned afresh;
    /// the deleted one, put back, is refused as retired.
    #[test]
    fn init_pins_the_new_vault_and_retires_the_one_it_replaced() {
        let root = tempfile::tempdir().unwrap();
        let pins = Pins::open(root.path()).unwrap();
        pins.check_and_record("/srv/v", &r(1, 5, 1), None).unwrap();
        assert!(matches!(pins.check_and_record("/srv/v", &r(2, 1, 2), None), Err(PinError::Replaced { .. })));
        pins.initialised("/srv/v", &r(2, 1, 2)).unwrap();
        pins.check_and_record("/srv/v", &r(2, 3, 3), None).unwrap();
        assert!(matches!(pins.check_and_record("/srv/v", &r(1, 6, 1), None), Err(PinError::Retired(_))));
        // A first init at a new location just pins.
        pins.initialised("/srv/w", &r(3, 1, 3)).unwrap();
        pins.check_and_record("/srv/w", &r(3, 1, 3), None).unwrap();
    }

    #[test]
    fn receipts_and_fingerprints_round_trip_and_reject_junk() {
        let x = r(0xab, 42, 7);
        assert_eq!(Receipt::parse(&x.to_string()).unwrap(), x);
        assert_eq!(Fingerprint::parse(&x.fingerprint.to_string()).unwrap(), x.fingerprint);
        assert_eq!(Fingerprint::parse(&format::hex(&[0xab; 16])).unwrap(), x.fingerprint);
        for bad in ["", "pgcfs-receipt-v1:", "pgcfs-receipt-v1:zz:1:00", &format!("{x}:extra"), &x.to_string().replace(":42:", ":-1:")] {
            assert!(Receipt::parse(bad).is_err(), "{bad}");
        }
        assert!(Fingerprint::parse("abcd").is_err());
        let a = Fingerprint::of(&[1; 16], &Secret32::from_bytes([2; 32]));
        assert_ne!(a, Fingerprint::of(&[1; 16], &Secret32::from_bytes([3; 32])), "another master key");
        assert_ne!(a, Fingerprint::of(&[9; 16], &Secret32::from_bytes([2; 32])), "another vault id");
    }

    #[test]
    fn expectations_refuse_other_vaults_rollback_and_forks() {
        let want = r(1, 10, 1);
        let e = Expect { fingerprint: None, receipt: Some(want) };
        e.check(&want).unwrap();
        e.check(&r(1, 11, 9)).unwrap(); // later state of the same vault
        assert!(matches!(e.check(&r(2, 10, 1)), Err(PinError::Replaced { .. })));
        assert!(matches!(e.check(&r(1, 9, 1)), Err(PinError::RolledBack { .. })));
        assert!(matches!(e.check(&r(1, 10, 2)), Err(PinError::Forked { .. })));
        let e = Expect { fingerprint: Some(Fingerprint([1; 16])), receipt: None };
        e.check(&r(1, 1, 1)).unwrap();
        assert!(matches!(e.check(&r(3, 1, 1)), Err(PinError::Replaced { .. })));
    }

    #[test]
    fn pins_follow_the_location_move_forward_and_never_take_back_a_retired_key() {
        let d = tempfile::tempdir().unwrap();
        let pins = Pins::open(d.path()).unwrap();
        let loc = "s3://bucket/prefix";
        pins.check_and_record(loc, &r(1, 5, 5), None).unwrap();
        pins.check_and_record(loc, &r(1, 7, 7), None).unwrap();
        let e = pins.check_and_record(loc, &r(1, 6, 6), None).unwrap_err();
        assert!(e.to_string().contains("rolled back"), "{e}");
        assert!(matches!(pins.check_and_record(loc, &r(1, 7, 8), None), Err(PinError::Forked { .. })));
        // Another vault at the same location (a new vault id, or the same id forged).
        let e = pins.check_and_record(loc, &r(2, 100, 1), None).unwrap_err();
        assert!(matches!(e, PinError::Replaced { .. }), "{e}");
        // Other locations are their own.
        pins.check_and_record("s3://bucket/other", &r(2, 1, 1), None).unwrap();
        // A rekey here retires fingerprint 1; the old vault put back is refused even when the
        // operator names its fingerprint to accept it, and the new one moves on.
        pins.rekeyed(loc, Fingerprint([1; 16]), &r(3, 8, 8)).unwrap();
        assert!(matches!(pins.check_and_record(loc, &r(1, 9, 9), Some(Fingerprint([1; 16]))), Err(PinError::Retired(_))));
        pins.check_and_record(loc, &r(3, 9, 9), None).unwrap();
        // A rekey elsewhere: a new fingerprint is taken only if it is the one the operator named.
        let e = pins.check_and_record(loc, &r(4, 1, 1), Some(Fingerprint([5; 16]))).unwrap_err();
        assert!(matches!(e, PinError::Replaced { .. }), "{e}");
        pins.check_and_record(loc, &r(3, 10, 1), None).unwrap(); // still pinned to 3
        pins.check_and_record(loc, &r(4, 1, 1), Some(Fingerprint([4; 16]))).unwrap();
        assert!(matches!(pins.check_and_record(loc, &r(3, 11, 1), Some(Fingerprint([3; 16]))), Err(PinError::Retired(_))));
        // A planted link where the pin goes is replaced, never written through.
        let target = d.path().join("target");
        std::fs::write(&target, b"keep").unwrap();
        let name = Pins::name("file:///x");
        std::os::unix::fs::symlink(&target, d.path().join("pins").join(&name)).unwrap();
        assert!(pins.check_and_record("file:///x", &r(1, 1, 1), None).is_err());
        assert_eq!(std::fs::read(&target).unwrap(), b"keep");
    }

    /// No refusal suggests a flag that would take a retired key, and the one that suggests
    /// accepting a new key asks for the fingerprint the rekey printed, never the one found.
    #[test]
    fn refusals_suggest_no_flag_that_takes_what_they_refuse() {
        let (old, found) = (Fingerprint([1; 16]), Fingerprint([2; 16]));
        let replaced = PinError::Replaced { pinned: old, found, what: "pinned" }.to_string();
        assert!(replaced.contains("--accept-new-master-key --expect-fingerprint <that fingerprint>"), "{replaced}");
        assert!(replaced.contains("printed"), "{replaced}");
        assert!(!replaced.contains(&format!("--expect-fingerprint {found}")), "{replaced}");
        let retired = PinError::Retired(old).to_string();
        assert!(retired.contains("no option accepts it") && !retired.contains("--"), "{retired}");
        let expected = PinError::Replaced { pinned: old, found, what: "expected" }.to_string();
        assert!(!expected.contains("--"), "{expected}");
        // --accept-new-master-key alone is refused; with a fingerprint it names that one.
        assert!(matches!(Expect::default().accepting(true), Err(PinError::AcceptNeedsFingerprint)));
        assert_eq!(Expect::default().accepting(false).unwrap(), None);
        let e = Expect { fingerprint: Some(found), receipt: None };
        assert_eq!(e.accepting(true).unwrap(), Some(found));
        assert!(PinError::AcceptNeedsFingerprint.to_string().contains("--expect-fingerprint"));
    }

    /// Past MAX_RETIRED retirements the oldest are forgotten, never the newest.
    #[test]
    fn the_newest_retired_fingerprints_are_kept() {
        let d = tempfile::tempdir().unwrap();
        let pins = Pins::open(d.path()).unwrap();
        let loc = "file:///v";
        pins.check_and_record(loc, &r(0, 1, 1), None).unwrap();
        for fp in 1..=(MAX_RETIRED as u8 + 6) {
            pins.check_and_record(loc, &r(fp, 1, 1), Some(Fingerprint([fp; 16]))).unwrap();
        }
        let last_retired = MAX_RETIRED as u8 + 5;
        let e = pins.check_and_record(loc, &r(last_retired, 2, 2), Some(Fingerprint([last_retired; 16])));
        assert!(matches!(e, Err(PinError::Retired(_))), "{e:?}");
        assert_eq!(pins.load(loc).unwrap().unwrap().retired.len(), MAX_RETIRED);
    }
}
