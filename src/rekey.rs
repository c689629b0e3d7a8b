//! `pgcryptfs rekey`: re-encrypts every chunk and the metadata under a new master key (for a
//! leaked master key). Resumable: the new key waits in `rekey/slot` until everything is
//! rewritten, then replaces every key slot. Keeps only the slot that unlocked it, remade under
//! a fresh slot key where its method allows (`keys::reseal_fresh`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::io::Write;
use std::time::{Duration, Instant};

use crate::audit;
use crate::codec::{ChunkCodec, Compression};
use crate::crypto::{self, Secret32, SecretBytes};
use crate::format::{self, ChunkRef, Id, Record, Slot, VaultHeader};
use crate::keys::{self, Opened, Unlock, VaultKeys};
use crate::lease::{LEASE_OBJECT, Lease};
use crate::store::{Store, StoreError};
use crate::pins::{Fingerprint, Pins, Receipt};
use crate::vault::{self, LEASE_TTL_SECS, REKEY_PENDING_OBJECT, REKEY_PROOF_OBJECT, VaultError};

#[derive(Debug)]
pub enum RekeyError {
    Vault(VaultError),
    /// Stopped on request (test hook) or refused before starting.
    Stopped(String),
    /// A pack or chunk does not match the metadata.
    Data(String),
}

impl fmt::Display for RekeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RekeyError::Vault(e) => write!(f, "{e}"),
            RekeyError::Stopped(m) | RekeyError::Data(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for RekeyError {}

impl From<VaultError> for RekeyError {
    fn from(e: VaultError) -> Self {
        RekeyError::Vault(e)
    }
}
impl From<StoreError> for RekeyError {
    fn from(e: StoreError) -> Self {
        RekeyError::Vault(e.into())
    }
}

type Result<T> = std::result::Result<T, RekeyError>;

#[derive(Default)]
pub struct RekeyOptions {
    pub break_lease: bool,
    /// Print progress on stderr (a terminal).
    pub progress: bool,
    /// Stop (as if interrupted) after this many packs: for tests of resuming.
    pub stop_after_packs: Option<usize>,
}

/// What a rekey did.
pub struct Summary {
    pub packs: usize,
    pub chunks: usize,
    pub bytes: u64,
    pub slot: Slot,
    /// The fingerprint the rekey retired (unknown when only the clean-up was left to resume).
    pub retired: Option<Fingerprint>,
}

/// The vault's state after a rekey: its new fingerprint and head.
pub fn state_after(store: &dyn Store, header: &VaultHeader, unlock: &Unlock) -> Result<Receipt> {
    let keys = vault::unlock(store, header, unlock)?;
    let (_, seq, hash) = vault::load_records(store, header, &keys)?;
    Ok(Receipt { fingerprint: Fingerprint::of(&header.vault_id, &keys.meta), seq, hash })
}

/// Re-encrypts the vault under a new master key, or finishes an interrupted rekey.
pub fn rekey(store: &dyn Store, unlock: &Unlock, opts: &RekeyOptions) -> Result<Summary> {
    let header = vault::read_header(store)?;
    let current = vault::unlock_master(store, &header, unlock)?;
    let pending = match store.get_range_upto(REKEY_PENDING_OBJECT, 0, vault::MAX_SLOT_BYTES as usize + 1) {
        Ok(b) => Some((
            keys::open_slots(&header, &[(REKEY_PENDING_OBJECT.into(), b.clone())], unlock).map_err(|e| {
                RekeyError::Stopped(format!(
                    "a rekey of this vault was interrupted and its new key does not open with what was given ({e}); \
                     resume it with the key it was started with"
                ))
            })?,
            b,
        )),
        Err(StoreError::NotFound(_)) => None,
        Err(e) => return Err(e.into()),
    };
    if let Some((p, _)) = &pending
        && crypto::ct_eq(p.master.expose(), current.master.expose())
    {
        // The slots were switched already: only the clean-up is left.
        log::info!("resuming an interrupted rekey after its key switch");
        let new_keys = VaultKeys::derive(&p.master);
        finish(store, &header, &p.slot, &new_keys, None)?;
        return Ok(Summary { packs: 0, chunks: 0, bytes: 0, slot: p.slot.clone(), retired: None });
    }
    let old_keys = VaultKeys::derive(&current.master);
    let lease = Lease::acquire(store, &header, &old_keys.meta, LEASE_TTL_SECS, opts.break_lease, None)
        .map_err(VaultError::Lease)?;
    let mut guard = LeaseGuard { store, header: &header, key: &old_keys.meta, lease: Some(lease), renewed: Instant::now() };
    let (new_slot, new_master) = match pending {
        Some((p, bytes)) => {
            check_proof(store, &header, &old_keys, &bytes, &p.master)?;
            log::info!("resuming an interrupted rekey (new slot {})", format::hex(&p.slot.slot_id));
            (p.slot, p.master)
        }
        None => start(store, &header, &current, unlock, &old_keys)?,
    };
    let new_keys = VaultKeys::derive(&new_master);
    let retired = Some(Fingerprint::of(&header.vault_id, &old_keys.meta));
    let mut summary = Summary { packs: 0, chunks: 0, bytes: 0, slot: new_slot.clone(), retired };
    match vault::load_records(store, &header, &old_keys) {
        Ok((records, seq, hash)) => {
            let ctx = Ctx {
                store,
                old: ChunkCodec::new(&header, old_keys.data.duplicate(), Compression::Off),
                new: ChunkCodec::new(&header, new_keys.data.duplicate(), Compression::Off),
                new_slot: &new_slot.slot_id,
            };
            let records = reencrypt(&ctx, records, &mut guard, opts, &mut summary)?;
            let object = vault::seal_checkpoint(&header, &new_keys.meta, seq + 1, hash, &records);
            store.put_new(&format::segment_name(seq + 1), &object)?;
        }
        // The new checkpoint is written already if the metadata opens with the new key.
        Err(e) => {
            if vault::load_records(store, &header, &new_keys).is_err() {
                return Err(e.into());
            }
        }
    }
    finish(store, &header, &new_slot, &new_keys, Some(&mut guard))?;
    Ok(summary)
}

/// Makes the new master key and its slot (the unlocking slot's method and label, under a fresh
/// slot key where the method allows: see `keys::reseal_fresh`; the same unlock opens it) and
/// stores it as the pending rekey.
fn start(store: &dyn Store, header: &VaultHeader, current: &Opened, unlock: &Unlock, old: &VaultKeys) -> Result<(Slot, Secret32)> {
    let master = Secret32::random();
    let slot = keys::reseal_fresh(header, current, unlock, &master, format::Time::now().secs).map_err(VaultError::from)?;
    let bytes = slot.encode();
    // The proof first: a `rekey/slot` never exists without the proof that M1's holder made it.
    let proof = crypto::seal(&old.meta, &format::rekey_proof_aad(header, &bytes), master.expose());
    store.put(REKEY_PROOF_OBJECT, &proof)?;
    store.put_new(REKEY_PENDING_OBJECT, &bytes)?;
    let detail = format!("unlocked-with={}", format::hex(&current.slot.slot_id));
    audit::event("rekey started", &header.vault_id, &slot.slot_id, keys::method_name(slot.method), &detail);
    Ok((slot, master))
}

/// Refuses to resume a pending rekey that the holder of the current master key did not start:
/// anyone who can write the store and has an OpenPGP slot's public certificate could plant a
/// `rekey/slot` with a master key of their choosing.
fn check_proof(store: &dyn Store, header: &VaultHeader, old: &VaultKeys, pending: &[u8], master: &Secret32) -> Result<()> {
    let refuse = |why: &str| {
        RekeyError::Stopped(format!(
            "the pending rekey in {REKEY_PENDING_OBJECT} {why}, so it was not made with this vault's master key \
             (planted or damaged); nothing was changed. Delete {REKEY_PENDING_OBJECT} and {REKEY_PROOF_OBJECT} \
             from the store to start a new rekey"
        ))
    };
    // A proof is one sealed 32-byte key (72 bytes): nothing larger is read.
    let proof = match store.get_range_upto(REKEY_PROOF_OBJECT, 0, 73) {
        Ok(p) => p,
        Err(StoreError::NotFound(_)) => return Err(refuse("has no proof")),
        Err(e) => return Err(e.into()),
    };
    let opened = SecretBytes(
        crypto::open(&old.meta, &format::rekey_proof_aad(header, pending), &proof).map_err(|_| refuse("has a proof that does not authenticate"))?,
    );
    if !crypto::ct_eq(&opened.0, master.expose()) {
        return Err(refuse("holds a key other than its proof"));
    }
    Ok(())
}

/// The writer lease under the old metadata key, renewed as the work goes on.
struct LeaseGuard<'a> {
    store: &'a dyn Store,
    header: &'a VaultHeader,
    key: &'a Secret32,
    lease: Option<Lease>,
    renewed: Instant,
}

impl LeaseGuard<'_> {
    fn renew(&mut self) -> Result<()> {
        if self.renewed.elapsed() >= Duration::from_secs(LEASE_TTL_SECS as u64 / 3)
            && let Some(l) = self.lease.as_mut()
        {
            l.renew(self.store, self.header, self.key).map_err(VaultError::Lease)?;
            self.renewed = Instant::now();
        }
        Ok(())
    }

}

/// An interrupted or failed rekey gives the lease back (the pending key stays).
impl Drop for LeaseGuard<'_> {
    fn drop(&mut self) {
        if let Some(l) = self.lease.take() {
            let _ = l.release(self.store, self.header, self.key);
        }
    }
}

struct Ctx<'a> {
    store: &'a dyn Store,
    /// Chunks as the old and the new master key seal them (bodies are moved as they are).
    old: ChunkCodec,
    new: ChunkCodec,
    new_slot: &'a Id,
}

/// The new name of an old pack: fixed for one rekey, so a resumed run finds what it wrote.
fn new_pack_id(new_slot: &Id, old: &Id) -> Id {
    let mut input = b"pgcfs-rekey-pack".to_vec();
    input.extend_from_slice(new_slot);
    input.extend_from_slice(old);
    let h = crypto::hash32(&input);
    let mut id = [0u8; format::ID_LEN];
    id.copy_from_slice(&h[..format::ID_LEN]);
    id
}

/// Rewrites every referenced chunk into new packs under the new data key; returns the records
/// with their chunk references moved.
fn reencrypt(
    ctx: &Ctx,
    mut records: Vec<Record>,
    guard: &mut LeaseGuard,
    opts: &RekeyOptions,
    summary: &mut Summary,
) -> Result<Vec<Record>> {
    let mut file_ids = HashMap::new();
    let mut by_pack: BTreeMap<Id, Vec<usize>> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        match r {
            Record::Inode { ino, file_id, .. } => {
                file_ids.insert(*ino, *file_id);
            }
            Record::Chunk { chunk, .. } => by_pack.entry(chunk.pack).or_default().push(i),
            _ => {}
        }
    }
    let total = by_pack.len();
    for (n, (pack, mut list)) in by_pack.into_iter().enumerate() {
        if opts.stop_after_packs == Some(n) {
            return Err(RekeyError::Stopped(format!("rekey stopped after {n} of {total} packs (as asked)")));
        }
        list.sort_by_key(|&i| chunk_of(&records[i]).1.offset);
        let placed = rewrite_pack(ctx, &pack, &list, &records, &file_ids)?;
        for (i, c) in list.iter().zip(placed) {
            if let Record::Chunk { chunk, .. } = &mut records[*i] {
                summary.bytes += u64::from(c.len);
                *chunk = c;
            }
        }
        summary.packs += 1;
        summary.chunks += list.len();
        if opts.progress {
            eprint!("\rrekey: {}/{total} packs, {} MiB", n + 1, summary.bytes >> 20);
            let _ = std::io::stderr().flush();
        }
        guard.renew()?;
    }
    if opts.progress && total > 0 {
        eprintln!();
    }
    Ok(records)
}

fn chunk_of(r: &Record) -> (u64, ChunkRef, u64) {
    match r {
        Record::Chunk { ino, index, chunk } => (*ino, *chunk, *index),
        _ => unreachable!("only chunk records are grouped"),
    }
}

/// Re-encrypts the chunks (`list`, in offset order) of one old pack into its new pack, or
/// checks the new pack a previous run stored. Returns the new references, in `list` order.
fn rewrite_pack(
    ctx: &Ctx,
    pack: &Id,
    list: &[usize],
    records: &[Record],
    file_ids: &HashMap<u64, Id>,
) -> Result<Vec<ChunkRef>> {
    let new_id = new_pack_id(ctx.new_slot, pack);
    let mut layout = Vec::with_capacity(list.len());
    let mut end = 0u64;
    for &i in list {
        let (ino, c, index) = chunk_of(&records[i]);
        let file_id = file_ids.get(&ino).ok_or_else(|| RekeyError::Data(format!("chunk of unknown inode {ino}")))?;
        layout.push((c, file_id, index, end));
        end += u64::from(c.len);
    }
    // A new pack stored by an interrupted run is kept if every chunk in it opens. Only the
    // `end` bytes the new references cover are read (anything past them would be dead space).
    if let Ok(done) = ctx.store.get_range_upto(&format::pack_name(&new_id), 0, end as usize)
        && done.len() as u64 == end
    {
        let mut out = Vec::with_capacity(layout.len());
        let ok = layout.iter().all(|(c, file_id, index, off)| {
            let sealed = &done[*off as usize..(*off + u64::from(c.len)) as usize];
            let mut tag = [0u8; format::TAG_LEN];
            tag.copy_from_slice(&sealed[sealed.len() - format::TAG_LEN..]);
            let moved = ChunkRef { pack: new_id, offset: *off, len: c.len, tag };
            out.push(moved);
            ctx.new.authenticate(file_id, *index, &moved, sealed).is_ok()
        });
        if ok {
            return Ok(out);
        }
    }
    // Only as far as the furthest chunk the (authenticated) metadata places in the old pack: an
    // object replaced by a huge one in the store is not downloaded whole.
    let referenced = layout.iter().map(|(c, ..)| c.offset + u64::from(c.len)).max().unwrap_or(0);
    let old = ctx.store.get_range_upto(&format::pack_name(pack), 0, referenced as usize)?;
    let mut sealed_out = Vec::with_capacity(end as usize);
    let mut one = Vec::new();
    let mut out = Vec::with_capacity(layout.len());
    for (c, file_id, index, off) in &layout {
        let range = c.offset as usize..(c.offset + u64::from(c.len)) as usize;
        let Some(sealed) = old.get(range) else {
            return Err(RekeyError::Data(format!("pack {} offset {}: the pack is too short", format::hex(pack), c.offset)));
        };
        // Length, tag, authentication under the old key and the body's encoding are checked;
        // the body is sealed again under the new key as it is (same length, same AAD).
        let tag = ctx.new.reseal_from(&ctx.old, file_id, *index, c, sealed, &mut one).map_err(|e| RekeyError::Data(e.to_string()))?;
        sealed_out.extend_from_slice(&one);
        out.push(ChunkRef { pack: new_id, offset: *off, len: c.len, tag });
    }
    ctx.store.put(&format::pack_name(&new_id), &sealed_out)?;
    Ok(out)
}

/// Switches the key slots to the new master key, deletes what the old key sealed (old packs,
/// old segments, the lease) and finally the pending marker.
fn finish(store: &dyn Store, header: &VaultHeader, slot: &Slot, new: &VaultKeys, guard: Option<&mut LeaseGuard>) -> Result<()> {
    let name = format::slot_name(&slot.slot_id);
    store.put(&name, &slot.encode())?;
    let mut removed = Vec::new();
    // Only names that parse as this format's own ids (and are spelt as it spells them) are
    // deleted: anything else under a prefix is not ours to remove.
    for (other, _) in store.list(format::KEYS_PREFIX)? {
        let ours = other.strip_prefix(format::KEYS_PREFIX).and_then(format::parse_hex_id).is_some_and(|id| format::slot_name(&id) == other);
        if ours && other != name {
            delete(store, &other)?;
            removed.push(other);
        }
    }
    let (records, seq, _) = vault::load_records(store, header, new)?;
    let keep: HashSet<Id> =
        records.iter().filter_map(|r| if let Record::Chunk { chunk, .. } = r { Some(chunk.pack) } else { None }).collect();
    for (p, _) in store.list(format::PACKS_PREFIX)? {
        let id = format::parse_pack_name(&p).filter(|id| format::pack_name(id) == p);
        if id.is_some_and(|id| !keep.contains(&id)) {
            delete(store, &p)?;
        }
    }
    for (m, _) in store.list(format::META_PREFIX)? {
        if format::parse_segment_name(&m).is_some_and(|s| s < seq && format::segment_name(s) == m) {
            delete(store, &m)?;
        }
    }
    // The lease is sealed under the old key, which nothing can open any more.
    match guard {
        Some(g) => {
            g.lease = None;
            delete(store, LEASE_OBJECT)?;
        }
        None => delete(store, LEASE_OBJECT)?,
    }
    delete(store, REKEY_PENDING_OBJECT)?;
    delete(store, REKEY_PROOF_OBJECT)?;
    let detail = format!("removed-slots={}", removed.len());
    audit::event("rekey finished", &header.vault_id, &slot.slot_id, keys::method_name(slot.method), &detail);
    Ok(())
}

fn delete(store: &dyn Store, name: &str) -> Result<()> {
    match store.delete(name) {
        Ok(()) | Err(StoreError::NotFound(_)) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// `pgcryptfs rekey STORE <unlock>`.
pub fn rekey_command(
    url: &str,
    options: &[(String, String)],
    unlock: &keys::UnlockSpec,
    opts: &RekeyOptions,
) -> std::result::Result<String, String> {
    let store = crate::store::open_store(url, options)?;
    let unlock = unlock.load().map_err(|e| e.to_string())?;
    let s = rekey(store.as_ref(), &unlock, opts).map_err(|e| e.to_string())?;
    // This host retires the old fingerprint for good: an old copy of the vault put back is
    // refused here, whatever flag a mount is given.
    let header = vault::read_header(store.as_ref()).map_err(|e| e.to_string())?;
    let now = state_after(store.as_ref(), &header, &unlock).map_err(|e| e.to_string())?;
    if let Some(old) = s.retired {
        let pinned = Pins::open(&crate::config::default_cache_dir()).and_then(|p| p.rekeyed(&store.describe(), old, &now));
        if let Err(e) = pinned {
            log::warn!("could not record the retired fingerprint in this host's pins: {e}");
        }
    }
    Ok(format!(
        "re-encrypted {} chunks ({} bytes) in {} packs under a new master key; the vault's only key slot is now {} ({}); \
         add the other keys again with `pgcryptfs key add`\nfingerprint: {}\nreceipt: {now}",
        s.chunks,
        s.bytes,
        s.packs,
        format::hex(&s.slot.slot_id),
        keys::method_name(s.slot.method),
        now.fingerprint
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemStore;
    use crate::vault::{OpenOptions, Vault};
    use std::sync::Arc;

    fn unlock() -> Unlock {
        Unlock::key(&Secret32::from_bytes([9; 32]))
    }

    fn open(store: &Arc<MemStore>) -> std::result::Result<Vault, VaultError> {
        Vault::open_with(Box::new(store.clone()), &unlock(), &OpenOptions { read_only: true, ..Default::default() })
    }

    #[test]
    fn interrupted_key_switch_is_finished_by_a_second_run() {
        let store = Arc::new(MemStore::new());
        let header = vault::init(&store, &Secret32::from_bytes([9; 32]), 65536, 0, 0).ok().unwrap();
        let old_master = vault::unlock_master(&store, &header, &unlock()).ok().unwrap().master;
        store.fail_next_delete_under(format::KEYS_PREFIX);
        let e = rekey(&store, &unlock(), &RekeyOptions::default()).err().unwrap().to_string();
        assert!(e.contains("injected failure"), "{e}");
        assert!(store.get(REKEY_PENDING_OBJECT).is_ok());
        let refused = open(&store).err().unwrap().to_string();
        assert!(refused.contains("a rekey of memory is under way or was interrupted"), "{refused}");
        let s = rekey(&store, &unlock(), &RekeyOptions::default()).ok().unwrap();
        assert!(store.get(REKEY_PENDING_OBJECT).is_err());
        assert!(store.get(LEASE_OBJECT).is_err());
        let slots = vault::read_slots(&store).ok().unwrap();
        assert_eq!(slots.len(), 1);
        assert_eq!(slots[0].0, format::slot_name(&s.slot.slot_id));
        let new_master = vault::unlock_master(&store, &header, &unlock()).ok().unwrap().master;
        assert!(!crypto::ct_eq(new_master.expose(), old_master.expose()));
        assert_eq!(store.list(format::META_PREFIX).unwrap().len(), 1, "only the new checkpoint is left");
        assert!(open(&store).is_ok());
    }

    /// Objects under `keys/`, `packs/` and `meta/` whose names are not this format's own ids
    /// (another tool's files, names spelt differently) are never deleted by a rekey.
    #[test]
    fn only_own_names_are_deleted() {
        let store = Arc::new(MemStore::new());
        vault::init(&store, &Secret32::from_bytes([9; 32]), 65536, 0, 0).ok().unwrap();
        let id = [0xabu8; 16];
        let foreign = [
            "packs/README".to_string(),
            format!("packs/{}", format::hex(&id).to_uppercase()),
            "meta/+000000000000000".to_string(),
            "meta/00000000000000000".to_string(),
            format!("keys/{}", format::hex(&id).to_uppercase()),
        ];
        for f in &foreign {
            store.put(f, b"not pgcryptfs").unwrap();
        }
        rekey(&store, &unlock(), &RekeyOptions::default()).ok().unwrap();
        for f in &foreign {
            assert_eq!(store.get(f).ok().as_deref(), Some(&b"not pgcryptfs"[..]), "{f} was deleted");
        }
    }

    /// A `rekey/slot` planted by someone without the master key (e.g. with an OpenPGP slot's
    /// public certificate) is never resumed: no proof, a forged proof, or a proof of another key.
    #[test]
    fn a_planted_pending_rekey_is_refused() {
        let store = Arc::new(MemStore::new());
        let header = vault::init(&store, &Secret32::from_bytes([9; 32]), 65536, 0, 0).ok().unwrap();
        let before: Vec<(String, Vec<u8>)> =
            store.list("").unwrap().into_iter().map(|(k, _)| (k.clone(), store.get(&k).unwrap())).collect();
        // The attacker's slot: the same method and slot key (which the public part would allow
        // for OpenPGP), wrapping a master key of their choosing.
        let current = vault::unlock_master(&store, &header, &unlock()).ok().unwrap();
        let evil = Secret32::random();
        let mut slot = current.slot.clone();
        slot.slot_id = crypto::random_id();
        slot.sealed_key = crypto::seal(&current.slot_key, &format::slot_aad(&header, &slot.prefix()), evil.expose());
        let planted = slot.encode();
        store.put(REKEY_PENDING_OBJECT, &planted).unwrap();
        let attempts: [Option<Vec<u8>>; 3] = [
            None,
            Some(vec![7u8; 72]),
            // A proof that authenticates but under the wrong key cannot be made without M1;
            // one made with a random key stands for any other forgery.
            Some(crypto::seal(&Secret32::random(), &format::rekey_proof_aad(&header, &planted), evil.expose())),
        ];
        for proof in attempts {
            match &proof {
                Some(p) => store.put(REKEY_PROOF_OBJECT, p).unwrap(),
                None => store.delete(REKEY_PROOF_OBJECT).unwrap(),
            }
            let e = rekey(&store, &unlock(), &RekeyOptions::default()).err().unwrap().to_string();
            assert!(e.contains("not made with this vault's master key"), "{e}");
        }
        store.delete(REKEY_PROOF_OBJECT).unwrap();
        store.delete(REKEY_PENDING_OBJECT).unwrap();
        let after: Vec<(String, Vec<u8>)> =
            store.list("").unwrap().into_iter().map(|(k, _)| (k.clone(), store.get(&k).unwrap())).collect();
        assert!(before == after, "a refused rekey changes nothing");
        let master = vault::unlock_master(&store, &header, &unlock()).ok().unwrap().master;
        assert!(crypto::ct_eq(master.expose(), current.master.expose()));
    }

    use crate::gc::testing::{ReadMeter, only_pack, read_file, write_files, writer};
    use crate::keys::NewSlot;
    use crate::keys::passphrase::{self, Cost};

    const CHEAP: Cost = Cost { opslimit: 1, memlimit: 8 << 20 };

    fn pass_unlock() -> Unlock {
        Unlock::Passphrase { pass: SecretBytes(b"correct horse".to_vec()), source: "the test passphrase".into() }
    }

    /// A Cv25519 certificate and its secret key, armored.
    fn pgp_pair() -> (Vec<u8>, Vec<u8>) {
        use sequoia_openpgp::cert::CertBuilder;
        use sequoia_openpgp::serialize::SerializeInto;
        let (cert, _) = CertBuilder::general_purpose(["Backup <backup@example.org>"]).generate().unwrap();
        (cert.armored().to_vec().unwrap(), cert.as_tsk().armored().to_vec().unwrap())
    }

    /// The vaults of the slot-key tests: one slot of each method that a rekey can remake under a
    /// fresh slot key, with the unlock that opens it.
    fn fresh_key_vaults() -> Vec<(&'static str, Arc<ReadMeter>, Unlock)> {
        let (cert, tsk) = pgp_pair();
        let made = [
            ("passphrase", NewSlot::Passphrase(SecretBytes(b"correct horse".to_vec()), CHEAP), pass_unlock()),
            ("openpgp", NewSlot::OpenPgp(cert), Unlock::openpgp(&tsk, None, "the test key").ok().unwrap()),
        ];
        made.into_iter()
            .map(|(what, first, unlock)| {
                let store = Arc::new(ReadMeter::default());
                vault::init_with(&store.inner, &first, Some("ops team"), 65536, 0, 0).map_err(|e| e.to_string()).unwrap();
                (what, store, unlock)
            })
            .collect()
    }

    /// A rekey remakes the unlocking slot under a fresh slot key: new passphrase salt, a new
    /// OpenPGP message with a new random key; the old slot key does not open the new slot.
    #[test]
    fn rekey_makes_a_fresh_slot_key() {
        for (what, store, unlock) in fresh_key_vaults() {
            let header = vault::read_header(&store).ok().unwrap();
            let before = vault::unlock_master(&store, &header, &unlock).ok().unwrap();
            let s = rekey(&store, &unlock, &RekeyOptions::default()).map_err(|e| e.to_string()).unwrap();
            let after = vault::unlock_master(&store, &header, &unlock).ok().unwrap();
            assert_eq!(after.slot.slot_id, s.slot.slot_id, "{what}");
            assert_ne!(after.slot.slot_id, before.slot.slot_id, "{what}");
            assert_eq!((after.slot.method, &after.slot.label), (before.slot.method, &before.slot.label), "{what}");
            assert_ne!(after.slot.params, before.slot.params, "{what}: the params are remade");
            assert!(!crypto::ct_eq(after.slot_key.expose(), before.slot_key.expose()), "{what}: the slot key is fresh");
            assert!(!crypto::ct_eq(after.master.expose(), before.master.expose()), "{what}");
            let aad = format::slot_aad(&header, &after.slot.prefix());
            assert!(crypto::open(&before.slot_key, &aad, &after.slot.sealed_key).is_err(), "{what}: the old slot key opens the new slot");
            if what == "passphrase" {
                let (old, new) = (passphrase::Params::decode(&before.slot.params).unwrap(), passphrase::Params::decode(&after.slot.params).unwrap());
                assert_eq!(old.cost, new.cost, "the cost is kept");
                assert_ne!(old.salt, new.salt, "the salt is fresh");
            } else {
                let fp = |p: &[u8]| format::Dec::new(p).bytes16("fingerprint").unwrap().to_vec();
                assert_eq!(fp(&before.slot.params), fp(&after.slot.params), "encrypted again to the same certificate");
            }
        }
        // Sodium (and command): the slot key is the user's key itself; the new slot is a new
        // sealing under it (new id, new nonce), which the same key opens.
        let store = Arc::new(MemStore::new());
        let header = vault::init(&store, &Secret32::from_bytes([9; 32]), 65536, 0, 0).ok().unwrap();
        let before = vault::unlock_master(&store, &header, &unlock()).ok().unwrap();
        rekey(&store, &unlock(), &RekeyOptions::default()).map_err(|e| e.to_string()).unwrap();
        let after = vault::unlock_master(&store, &header, &unlock()).ok().unwrap();
        assert!(crypto::ct_eq(after.slot_key.expose(), before.slot_key.expose()));
        assert_ne!(after.slot.slot_id, before.slot.slot_id);
        assert_ne!(after.slot.sealed_key[..24], before.slot.sealed_key[..24], "a new nonce");
    }

    /// An interrupted rekey resumes with its pending slot (the fresh slot key opens with the
    /// same passphrase or OpenPGP key), and ends with that slot as the vault's only one.
    #[test]
    fn a_rekey_with_a_fresh_slot_key_resumes() {
        for (what, store, unlock) in fresh_key_vaults() {
            write_a(&store, &unlock);
            let stop = RekeyOptions { stop_after_packs: Some(0), ..Default::default() };
            let e = rekey(&store, &unlock, &stop).err().unwrap().to_string();
            assert!(e.contains("rekey stopped after 0 of 1 packs"), "{what}: {e}");
            let pending = Slot::decode(&store.inner.get(REKEY_PENDING_OBJECT).unwrap()).unwrap();
            let s = rekey(&store, &unlock, &RekeyOptions::default()).map_err(|e| e.to_string()).unwrap();
            assert_eq!(s.slot.slot_id, pending.slot_id, "{what}");
            assert_eq!(vault::read_slots(&store).ok().unwrap().len(), 1, "{what}");
            let ro = OpenOptions { read_only: true, ..Default::default() };
            let v = Vault::open_with(Box::new(store.clone()), &unlock, &ro).map_err(|e| e.to_string()).unwrap();
            assert_eq!(read_file(&v, b"a"), b"alpha", "{what}");
        }
    }

    /// The key slots from before a rekey, put back into the store, give the old master key,
    /// whose metadata and packs are gone: the vault is refused, never opened.
    #[test]
    fn old_slots_put_back_after_a_rekey_open_nothing() {
        for (what, store, unlock) in fresh_key_vaults() {
            write_a(&store, &unlock);
            let (old_pack, _) = only_pack(&store);
            let old_slots: Vec<(String, Vec<u8>)> =
                store.inner.list(format::KEYS_PREFIX).unwrap().into_iter().map(|(n, _)| (n.clone(), store.inner.get(&n).unwrap())).collect();
            rekey(&store, &unlock, &RekeyOptions::default()).map_err(|e| e.to_string()).unwrap();
            assert!(store.inner.get(&old_pack).is_err(), "{what}: the old pack is deleted");
            let new_slots: Vec<(String, Vec<u8>)> =
                store.inner.list(format::KEYS_PREFIX).unwrap().into_iter().map(|(n, _)| (n.clone(), store.inner.get(&n).unwrap())).collect();
            for (n, _) in &new_slots {
                store.inner.delete(n).unwrap();
            }
            for (n, b) in &old_slots {
                store.inner.put(n, b).unwrap();
            }
            let ro = OpenOptions { read_only: true, ..Default::default() };
            let e = Vault::open_with(Box::new(store.clone()), &unlock, &ro).err().unwrap();
            assert!(
                matches!(&e, VaultError::Metadata(m) if m.contains("failed authentication")),
                "{what}: {e}"
            );
            assert!(e.to_string().starts_with("vault metadata is damaged or was tampered with"), "{what}: {e}");
            // With the new slot back, the same unlock opens the rekeyed vault.
            for (n, _) in &old_slots {
                store.inner.delete(n).unwrap();
            }
            for (n, b) in &new_slots {
                store.inner.put(n, b).unwrap();
            }
            let v = Vault::open_with(Box::new(store.clone()), &unlock, &ro).map_err(|e| e.to_string()).unwrap();
            assert_eq!(read_file(&v, b"a"), b"alpha", "{what}");
        }
    }

    /// A pack object replaced by a much larger one: a rekey reads only as far as the metadata's
    /// chunks reach. A genuine prefix is re-encrypted; junk is refused, naming the pack.
    #[test]
    fn an_oversized_pack_is_read_only_as_far_as_referenced() {
        for genuine_prefix in [true, false] {
            let store = Arc::new(ReadMeter::default());
            vault::init(&store.inner, &Secret32::from_bytes([9; 32]), 65536, 0, 0).ok().unwrap();
            let cache = tempfile::tempdir().unwrap();
            let v = writer(&store, &unlock(), cache.path());
            write_files(&v, &[(b"a", b"alpha"), (b"b", b"beta")]);
            v.release_lease().unwrap();
            drop(v);
            let (name, pack) = only_pack(&store);
            let mut planted = if genuine_prefix { pack.clone() } else { Vec::new() };
            planted.resize(32 << 20, 0x5a);
            store.inner.put(&name, &planted).unwrap();
            store.reset();
            let r = rekey(&store, &unlock(), &RekeyOptions::default());
            assert!(store.largest_pack_read() <= pack.len() as u64, "read {} of a {}-byte pack", store.largest_pack_read(), pack.len());
            if genuine_prefix {
                r.map_err(|e| e.to_string()).unwrap();
                assert!(store.inner.get(&name).is_err(), "the oversized object is deleted with the old key's packs");
                let ro = OpenOptions { read_only: true, ..Default::default() };
                let v = Vault::open_with(Box::new(store.clone()), &unlock(), &ro).map_err(|e| e.to_string()).unwrap();
                assert_eq!(read_file(&v, b"a"), b"alpha");
                assert_eq!(read_file(&v, b"b"), b"beta");
            } else {
                let e = r.err().unwrap().to_string();
                let hex = name.strip_prefix(format::PACKS_PREFIX).unwrap();
                assert!(e.contains(&format!("pack {hex} offset")) && e.contains("not the one the metadata records"), "{e}");
            }
        }
    }

    /// A vault of `what` (sodium, passphrase or openpgp; `pgp` is the certificate and secret key
    /// of the openpgp one) holding file `a`, and the unlock that opens it.
    fn vault_with_a(what: &str, pgp: &(Vec<u8>, Vec<u8>)) -> (Arc<ReadMeter>, Unlock) {
        let store = Arc::new(ReadMeter::default());
        let unlock = match what {
            "sodium" => {
                vault::init(&store.inner, &Secret32::from_bytes([9; 32]), 65536, 0, 0).ok().unwrap();
                unlock()
            }
            "passphrase" => {
                let first = NewSlot::Passphrase(SecretBytes(b"correct horse".to_vec()), CHEAP);
                vault::init_with(&store.inner, &first, Some("ops team"), 65536, 0, 0).map_err(|e| e.to_string()).unwrap();
                pass_unlock()
            }
            _ => {
                let first = NewSlot::OpenPgp(pgp.0.clone());
                vault::init_with(&store.inner, &first, Some("ops team"), 65536, 0, 0).map_err(|e| e.to_string()).unwrap();
                Unlock::openpgp(&pgp.1, None, "the test key").ok().unwrap()
            }
        };
        write_a(&store, &unlock);
        (store, unlock)
    }

    /// Writes file `a` ("alpha") through a writable open of the vault, commits and lets go.
    fn write_a(store: &Arc<ReadMeter>, unlock: &Unlock) {
        let cache = tempfile::tempdir().unwrap();
        let v = writer(store, unlock, cache.path());
        write_files(&v, &[(b"a", b"alpha")]);
        v.release_lease().unwrap();
    }

    fn slot_objects(store: &ReadMeter) -> Vec<(String, Vec<u8>)> {
        store.inner.list(format::KEYS_PREFIX).unwrap().into_iter().map(|(n, _)| (n.clone(), store.inner.get(&n).unwrap())).collect()
    }

    /// The key slot from before a rekey, put back beside the new one and listed (so tried)
    /// first, opens with the same key but holds the old master key: the unlock keeps the slot
    /// whose master key opens the metadata, the vault opens and the file reads. `key remove`
    /// of the old slot and a second rekey work beside it too; with the old slot alone the
    /// vault is refused as before.
    #[test]
    fn an_old_slot_beside_the_new_one_gives_way_to_it() {
        let pgp = pgp_pair();
        for what in ["sodium", "passphrase", "openpgp"] {
            // Slot ids are random: rekey until the old slot sorts before the new one.
            let (store, unlock, old, new) = (0..64)
                .find_map(|_| {
                    let (store, unlock) = vault_with_a(what, &pgp);
                    let old = slot_objects(&store);
                    rekey(&store, &unlock, &RekeyOptions::default()).map_err(|e| e.to_string()).unwrap();
                    let new = slot_objects(&store);
                    (old[0].0 < new[0].0).then_some((store, unlock, old, new))
                })
                .unwrap();
            assert_eq!((old.len(), new.len()), (1, 1), "{what}");
            store.inner.put(&old[0].0, &old[0].1).unwrap();
            let names: Vec<String> = slot_objects(&store).into_iter().map(|(n, _)| n).collect();
            assert_eq!(names, [old[0].0.clone(), new[0].0.clone()], "{what}: the old slot is listed first");
            let header = vault::read_header(&store).ok().unwrap();
            let old_slot = Slot::decode(&old[0].1).unwrap();
            let new_slot = Slot::decode(&new[0].1).unwrap();
            // Both open with the same unlock, with different master keys.
            let both = keys::open_every_slot(&header, &slot_objects(&store), &unlock).ok().unwrap();
            assert_eq!(both.len(), 2, "{what}");
            let first = keys::open_slots(&header, &slot_objects(&store), &unlock).ok().unwrap();
            assert_eq!(first.slot.slot_id, old_slot.slot_id, "{what}: the old slot is the first that opens");
            assert!(!crypto::ct_eq(both[0].1.master.expose(), both[1].1.master.expose()), "{what}");
            let chosen = vault::unlock_master(&store, &header, &unlock).map_err(|e| e.to_string()).unwrap();
            assert_eq!(chosen.slot.slot_id, new_slot.slot_id, "{what}");
            let ro = OpenOptions { read_only: true, ..Default::default() };
            let v = Vault::open_with(Box::new(store.clone()), &unlock, &ro).map_err(|e| e.to_string()).unwrap();
            assert_eq!(read_file(&v, b"a"), b"alpha", "{what}");
            drop(v);
            let cache = tempfile::tempdir().unwrap();
            let w = writer(&store, &unlock, cache.path());
            assert_eq!(read_file(&w, b"a"), b"alpha", "{what}: a writable mount too");
            w.release_lease().unwrap();
            drop(w);
            // With the old slot alone: refused, as before.
            store.inner.delete(&new[0].0).unwrap();
            let e = Vault::open_with(Box::new(store.clone()), &unlock, &ro).err().unwrap();
            assert!(matches!(&e, VaultError::Metadata(m) if m.contains("failed authentication")), "{what}: {e}");
            store.inner.put(&new[0].0, &new[0].1).unwrap();
            if what == "sodium" {
                // A rekey beside the old slot unlocks with the new master key and removes it.
                let s = rekey(&store, &unlock, &RekeyOptions::default()).map_err(|e| e.to_string()).unwrap();
                assert_eq!(slot_objects(&store).len(), 1);
                assert_eq!(slot_objects(&store)[0].0, format::slot_name(&s.slot.slot_id));
            } else {
                // `key remove` of the old slot unlocks with the new master key.
                let removed = crate::keyadmin::remove(&*store, &unlock, &format::hex(&old_slot.slot_id)).map_err(|e| e.to_string()).unwrap();
                assert_eq!(removed, format::hex(&old_slot.slot_id), "{what}");
                assert_eq!(slot_objects(&store), new, "{what}");
            }
            let v = Vault::open_with(Box::new(store.clone()), &unlock, &ro).map_err(|e| e.to_string()).unwrap();
            assert_eq!(read_file(&v, b"a"), b"alpha", "{what}");
        }
    }

    /// Unlocking reads only the key slots while every slot that opens holds the same master key
    /// (one slot, or several of one key); the newest metadata segment is read only once two
    /// slots open with different master keys. When none of those opens it, the refusal names
    /// the segment and the slots tried.
    #[test]
    fn only_different_master_keys_make_an_unlock_read_metadata() {
        let store = Arc::new(MemStore::new());
        let header = vault::init(&store, &Secret32::from_bytes([9; 32]), 65536, 0, 0).ok().unwrap();
        let reads = |f: &dyn Fn()| {
            let before = store.range_reads();
            f();
            store.range_reads() - before
        };
        let master = vault::unlock_master(&store, &header, &unlock()).ok().unwrap().master;
        assert_eq!(reads(&|| drop(vault::unlock_master(&store, &header, &unlock()).ok().unwrap())), 1, "the one slot only");
        let ro = OpenOptions { read_only: true, ..Default::default() };
        let open_reads = reads(&|| drop(open(&store).map_err(|e| e.to_string()).unwrap()));
        // Another key's slot and a second slot of the same key and master key.
        let put = |s: &Slot| store.put(&format::slot_name(&s.slot_id), &s.encode()).unwrap();
        put(&keys::make_sodium_slot(&header, &master, &Secret32::from_bytes([8; 32]), "other", 1));
        let twin = keys::make_sodium_slot(&header, &master, &Secret32::from_bytes([9; 32]), "twin", 1);
        put(&twin);
        let got = vault::unlock_master(&store, &header, &unlock()).ok().unwrap();
        assert!(crypto::ct_eq(got.master.expose(), master.expose()));
        assert_eq!(reads(&|| drop(vault::unlock_master(&store, &header, &unlock()).ok().unwrap())), 3, "the three slots only");
        assert_eq!(reads(&|| drop(open(&store).map_err(|e| e.to_string()).unwrap())), open_reads + 2, "two more slots, nothing else");
        // A slot of the same key holding another master key: the newest segment is read.
        let stray = keys::make_sodium_slot(&header, &Secret32::random(), &Secret32::from_bytes([9; 32]), "stray", 1);
        put(&stray);
        assert!(reads(&|| drop(vault::unlock_master(&store, &header, &unlock()).ok().unwrap())) > 4);
        let got = vault::unlock_master(&store, &header, &unlock()).ok().unwrap();
        assert!(crypto::ct_eq(got.master.expose(), master.expose()), "the master key that opens the metadata");
        assert!(Vault::open_with(Box::new(store.clone()), &unlock(), &ro).is_ok());
        // None of the master keys the key opens opens the metadata: refused, naming them.
        store.delete(&format::slot_name(&twin.slot_id)).unwrap();
        let first = vault::read_slots(&store).ok().unwrap().into_iter().find(|(_, b)| {
            let s = Slot::decode(b).unwrap();
            s.label == b"sodium"
        });
        store.delete(&first.unwrap().0).unwrap();
        let stray2 = keys::make_sodium_slot(&header, &Secret32::random(), &Secret32::from_bytes([9; 32]), "stray2", 1);
        put(&stray2);
        let e = match vault::unlock_master(&store, &header, &unlock()) {
            Ok(_) => panic!("unlocked"),
            Err(e) => e,
        };
        let m = e.to_string();
        assert!(matches!(&e, VaultError::Metadata(m) if m.contains("failed authentication")), "{m}");
        assert!(m.starts_with("vault metadata is damaged or was tampered with: segment 1 failed authentication"), "{m}");
        assert!(m.contains(&format::hex(&stray.slot_id)) && m.contains(&format::hex(&stray2.slot_id)), "{m}");
        assert!(Vault::open_with(Box::new(store.clone()), &unlock(), &ro).is_err());
    }
}
