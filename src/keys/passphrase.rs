//! `passphrase` key slots: the slot key is Argon2id(passphrase, salt) with its cost in the slot.

use super::KeyError;
use crate::crypto::{self, PWHASH_SALT_LEN, Secret32};
use crate::format::{Dec, Enc};

/// `crypto_pwhash_ALG_ARGON2ID13`, the only algorithm byte accepted.
pub const ALG_ARGON2ID13: u8 = 2;
/// Params length: alg (1) ‖ opslimit (8) ‖ memlimit (8) ‖ salt (16).
pub const PARAMS_LEN: usize = 1 + 8 + 8 + PWHASH_SALT_LEN;
/// Highest cost a slot may ask for when it is opened: a slot written by someone with store
/// access must not make an unlock exhaust memory or run for hours (SENSITIVE is 1 GiB / 4).
pub const MAX_MEMLIMIT: u64 = 1 << 30;
pub const MAX_OPSLIMIT: u64 = 16;

/// Argon2id cost for new slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub opslimit: u64,
    pub memlimit: u64,
}

impl Default for Cost {
    /// libsodium's MODERATE (3 passes over 256 MiB).
    fn default() -> Self {
        Cost { opslimit: crypto::PWHASH_OPSLIMIT_MODERATE, memlimit: crypto::PWHASH_MEMLIMIT_MODERATE }
    }
}

impl Cost {
    pub fn check(&self) -> Result<(), String> {
        if !(crypto::PWHASH_OPSLIMIT_MIN..=MAX_OPSLIMIT).contains(&self.opslimit) {
            return Err(format!("Argon2id opslimit {} is outside {}..={MAX_OPSLIMIT}", self.opslimit, crypto::PWHASH_OPSLIMIT_MIN));
        }
        if !(crypto::PWHASH_MEMLIMIT_MIN..=MAX_MEMLIMIT).contains(&self.memlimit) {
            return Err(format!("Argon2id memlimit {} is outside {}..={MAX_MEMLIMIT}", self.memlimit, crypto::PWHASH_MEMLIMIT_MIN));
        }
        Ok(())
    }
}

/// The clear parameters of a passphrase slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    pub cost: Cost,
    pub salt: [u8; PWHASH_SALT_LEN],
}

impl Params {
    pub fn new(cost: Cost) -> Self {
        let mut salt = [0u8; PWHASH_SALT_LEN];
        crypto::random_bytes(&mut salt);
        Params { cost, salt }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut e = Enc::new();
        e.u8(ALG_ARGON2ID13).u64(self.cost.opslimit).u64(self.cost.memlimit).raw(&self.salt);
        e.buf
    }

    /// Decodes and range-checks the parameters (errors say what is wrong, for "corrupt slot").
    pub fn decode(b: &[u8]) -> Result<Self, String> {
        if b.len() != PARAMS_LEN {
            return Err(format!("passphrase parameters are {} bytes, expected {PARAMS_LEN}", b.len()));
        }
        let mut d = Dec::new(b);
        let alg = d.u8("alg").map_err(|e| e.to_string())?;
        if alg != ALG_ARGON2ID13 {
            return Err(format!("unknown password hash algorithm {alg}"));
        }
        let opslimit = d.u64("opslimit").map_err(|e| e.to_string())?;
        let memlimit = d.u64("memlimit").map_err(|e| e.to_string())?;
        let salt = d.array("salt").map_err(|e| e.to_string())?;
        let cost = Cost { opslimit, memlimit };
        cost.check()?;
        Ok(Params { cost, salt })
    }

    /// The slot key: Argon2id(passphrase, salt, opslimit, memlimit), 32 bytes.
    pub fn derive(&self, pass: &[u8]) -> Result<Secret32, KeyError> {
        crypto::pwhash_argon2id(pass, &self.salt, self.cost.opslimit, self.cost.memlimit)
            .map_err(|e| KeyError::Source(format!("cannot derive the passphrase key: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_round_trip_and_are_checked() {
        let p = Params::new(Cost { opslimit: 1, memlimit: 8 << 20 });
        let b = p.encode();
        assert_eq!(b.len(), PARAMS_LEN);
        assert_eq!(b[0], 2);
        assert_eq!(Params::decode(&b).unwrap(), p);
        assert_ne!(Params::new(p.cost).salt, p.salt);
        let mut bad = b.clone();
        bad[0] = 1;
        assert_eq!(Params::decode(&bad).unwrap_err(), "unknown password hash algorithm 1");
        let huge = Params { cost: Cost { opslimit: 1, memlimit: 64 << 30 }, salt: p.salt }.encode();
        assert!(Params::decode(&huge).unwrap_err().contains("memlimit 68719476736 is outside"));
        assert!(Params::decode(&b[..10]).unwrap_err().contains("expected 33"));
        assert_eq!(Cost::default(), Cost { opslimit: 3, memlimit: 256 << 20 });
    }

    #[test]
    fn derivation_depends_on_passphrase_and_salt() {
        let p = Params::new(Cost { opslimit: 1, memlimit: 8 << 20 });
        let a = p.derive(b"one").ok().unwrap();
        assert_eq!(a.expose(), p.derive(b"one").ok().unwrap().expose());
        assert_ne!(a.expose(), p.derive(b"two").ok().unwrap().expose());
    }
}
