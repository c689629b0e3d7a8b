//! Key slot administration on a store (`key list`, `key add`, `key remove`), with audit lines.
//! Slots wrap the master key, so none of this re-encrypts a byte of data or metadata.

use std::fmt;

use crate::audit;
use crate::format::{self, Slot};
use crate::keys::{self, KeyError, NewSlot, NewSlotSpec, Unlock, UnlockSpec};
use crate::store::{self, Store, StoreError};
use crate::vault::{self, VaultError};

#[derive(Debug)]
pub enum AdminError {
    Vault(VaultError),
    /// The operation is refused (unknown or ambiguous slot id, last slot).
    Refused(String),
}

impl fmt::Display for AdminError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AdminError::Vault(e) => write!(f, "{e}"),
            AdminError::Refused(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for AdminError {}

impl From<VaultError> for AdminError {
    fn from(e: VaultError) -> Self {
        AdminError::Vault(e)
    }
}
impl From<KeyError> for AdminError {
    fn from(e: KeyError) -> Self {
        AdminError::Vault(e.into())
    }
}
impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        AdminError::Vault(e.into())
    }
}

type Result<T> = std::result::Result<T, AdminError>;

/// One line per slot: id, method, fingerprint or label, creation time. Needs no key.
pub fn list(store: &dyn Store) -> Result<Vec<String>> {
    vault::read_header(store)?;
    let mut rows = Vec::new();
    for (name, bytes) in vault::read_slots(store)? {
        match Slot::decode(&bytes) {
            Ok(s) => rows.push((
                s.created,
                format!(
                    "{}  {:<10}  {}  created {}",
                    format::hex(&s.slot_id),
                    keys::method_name(s.method),
                    keys::slot_description(&s),
                    audit::utc(s.created)
                ),
            )),
            Err(e) => rows.push((i64::MAX, format!("{}  corrupt     {e}", object_id(&name)))),
        }
    }
    rows.sort();
    Ok(rows.into_iter().map(|(_, l)| l).collect())
}

fn object_id(name: &str) -> &str {
    name.strip_prefix(format::KEYS_PREFIX).unwrap_or(name)
}

/// Adds a slot for `new`, unlocking the master key with `unlock`.
/// Slots change only outside a rekey: one added now would wrap the old master key, and the
/// rekey's end would delete it (or keep one that no longer opens anything).
fn refuse_during_rekey(store: &dyn Store) -> Result<()> {
    match store.get(vault::REKEY_PENDING_OBJECT) {
        Ok(_) => Err(AdminError::Refused(
            "a rekey of this vault is under way or was interrupted: finish it with `pgcryptfs rekey` first".into(),
        )),
        Err(StoreError::NotFound(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

pub fn add(store: &dyn Store, unlock: &Unlock, new: &NewSlot, label: Option<&str>) -> Result<Slot> {
    refuse_during_rekey(store)?;
    let header = vault::read_header(store)?;
    let opened = vault::unlock_master(store, &header, unlock)?;
    let slot = keys::make_slot(&header, &opened.master, new, label, format::Time::now().secs)?;
    store.put_new(&format::slot_name(&slot.slot_id), &slot.encode())?;
    let by = format!("unlocked-with={}", format::hex(&opened.slot.slot_id));
    audit::event("slot added", &header.vault_id, &slot.slot_id, keys::method_name(slot.method), &by);
    Ok(slot)
}

/// Removes the slot whose id starts with `which` (undecodable slots match by object name).
/// Refuses to remove the last slot that decodes: the vault would be lost.
pub fn remove(store: &dyn Store, unlock: &Unlock, which: &str) -> Result<String> {
    let refuse = |m: String| Err(AdminError::Refused(m));
    let which = which.to_ascii_lowercase();
    if which.is_empty() || !which.bytes().all(|c| c.is_ascii_hexdigit()) {
        return refuse(format!("'{which}' is not a slot id (hex, as `pgcryptfs key list` prints it)"));
    }
    refuse_during_rekey(store)?;
    let header = vault::read_header(store)?;
    let opened = vault::unlock_master(store, &header, unlock)?;
    let slots = vault::read_slots(store)?;
    let decoded: Vec<_> = slots.iter().map(|(n, b)| (n, Slot::decode(b).ok())).collect();
    let matches: Vec<_> = decoded
        .iter()
        .filter(|(n, s)| match s {
            Some(s) => format::hex(&s.slot_id).starts_with(&which),
            None => object_id(n).starts_with(&which),
        })
        .collect();
    let (name, slot) = match matches.as_slice() {
        [] => return refuse(format!("the vault has no key slot {which} (see `pgcryptfs key list`)")),
        [one] => *one,
        more => return refuse(format!("'{which}' matches {} key slots; give more of the id", more.len())),
    };
    let others = decoded.iter().filter(|(n, s)| *n != *name && s.is_some()).count();
    if slot.is_some() && others == 0 {
        return refuse(format!(
            "key slot {which} is the vault's last key slot; add another first (pgcryptfs key add), \
             or the vault could never be opened again"
        ));
    }
    store.delete(name)?;
    let (id, method) = match slot {
        Some(s) => (s.slot_id, keys::method_name(s.method)),
        None => (format::parse_hex_id(object_id(name)).unwrap_or_default(), "corrupt"),
    };
    let by = format!("unlocked-with={}", format::hex(&opened.slot.slot_id));
    audit::event("slot removed", &header.vault_id, &id, method, &by);
    Ok(format::hex(&id))
}

fn open(url: &str, options: &[(String, String)]) -> std::result::Result<Box<dyn Store>, String> {
    store::open_store(url, options)
}

/// `pgcryptfs key list STORE [<unlock>]`: the slots (no key needed) and, with an unlock
/// option, the vault's fingerprint, computed from the master key (a store cannot claim it).
pub fn list_command(url: &str, options: &[(String, String)], unlock: Option<&UnlockSpec>) -> std::result::Result<String, String> {
    let store = open(url, options)?;
    let mut out = list(store.as_ref()).map_err(|e| e.to_string())?;
    // Without a key there is nothing to show: a fingerprint the store could claim is no evidence.
    if let Some(spec) = unlock {
        let unlock = spec.load().map_err(|e| e.to_string())?;
        let header = vault::read_header(store.as_ref()).map_err(|e| e.to_string())?;
        let opened = vault::unlock_master(store.as_ref(), &header, &unlock).map_err(|e| e.to_string())?;
        let meta = keys::VaultKeys::derive(&opened.master).meta;
        out.push(format!("fingerprint: {}", crate::pins::Fingerprint::of(&header.vault_id, &meta)));
    }
    Ok(out.join("\n"))
}

/// `pgcryptfs key add STORE <new slot> <unlock>`.
pub fn add_command(
    url: &str,
    options: &[(String, String)],
    unlock: &UnlockSpec,
    new: &NewSlotSpec,
    label: Option<&str>,
) -> std::result::Result<String, String> {
    let store = open(url, options)?;
    let unlock = unlock.load().map_err(|e| e.to_string())?;
    let new = new.load().map_err(|e| e.to_string())?;
    let slot = add(store.as_ref(), &unlock, &new, label).map_err(|e| e.to_string())?;
    Ok(format!("added key slot {} ({})", format::hex(&slot.slot_id), keys::method_name(slot.method)))
}

/// `pgcryptfs key remove STORE SLOT <unlock>`.
pub fn remove_command(url: &str, options: &[(String, String)], unlock: &UnlockSpec, which: &str) -> std::result::Result<String, String> {
    let store = open(url, options)?;
    let unlock = unlock.load().map_err(|e| e.to_string())?;
    let id = remove(store.as_ref(), &unlock, which).map_err(|e| e.to_string())?;
    Ok(format!("removed key slot {id}"))
}
