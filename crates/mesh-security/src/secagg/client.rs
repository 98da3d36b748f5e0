//! The SecAgg+ client state machine.

use std::collections::BTreeMap;

use rand::{RngCore, SeedableRng};
use rand_chacha::{ChaCha12Rng, ChaCha20Rng};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::keys::{agree, open_share, pairwise_seed, seal_share, seed_commitment};
use super::messages::{
    AdvertiseKeys, EncryptedShare, MaskedInput, NeighbourKeys, ShareKeys, SharePair,
    SharesForClient, Signed, UnmaskRequest, UnmaskShares, WireBytes,
};
use super::params::SecAggParams;
use super::prg::{apply_mask, pack, Sign};
use super::quantize::{encode_update, rounding_rng};
use super::shamir::{self, ShareValue};
use super::SecAggError;
use crate::identity::NodeIdentity;

/// Secrets a client holds during a round; dropped (and zeroized) at its end.
struct RoundSecrets {
    enc_secret: StaticSecret,
    mask_secret: StaticSecret,
    self_seed: Zeroizing<[u8; 32]>,
}

enum Stage {
    Fresh,
    Advertised,
    Shared {
        neighbours: BTreeMap<u32, AdvertiseKeys>,
        /// The share-encryption agreement with each neighbour, computed when
        /// sharing and used again to open that neighbour's shares.
        enc_shared: BTreeMap<u32, Zeroizing<[u8; 32]>>,
    },
    Masked {
        received: BTreeMap<u32, SharePair>,
    },
    Done,
}

/// One client's side of a SecAgg+ round.
pub struct SecAggClient {
    params: SecAggParams,
    index: u32,
    identity: NodeIdentity,
    rng: ChaCha20Rng,
    rounding: ChaCha12Rng,
    secrets: Option<RoundSecrets>,
    stage: Stage,
}

impl std::fmt::Debug for SecAggClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecAggClient({})", self.index)
    }
}

fn random_secret(rng: &mut ChaCha20Rng) -> StaticSecret {
    let mut bytes = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(bytes.as_mut());
    StaticSecret::from(*bytes)
}

impl SecAggClient {
    /// Client `index` of the round, signing with `identity`; all of its random
    /// choices (keys, seeds, shares, rounding) come from `seed`.
    pub fn new(
        params: SecAggParams,
        index: u32,
        identity: NodeIdentity,
        seed: [u8; 32],
    ) -> Result<Self, SecAggError> {
        params.validate()?;
        let expected = params.participants.get(index as usize);
        if expected != Some(&identity.verifying_key()) {
            return Err(SecAggError::UnknownClient {
                client: index,
                reason: "identity is not the participant at this index",
            });
        }
        let rng = ChaCha20Rng::from_seed(seed);
        let rounding = rounding_rng(&seed);
        Ok(Self {
            params,
            index,
            identity,
            rng,
            rounding,
            secrets: None,
            stage: Stage::Fresh,
        })
    }

    /// This client's index.
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Round 0: makes fresh ephemeral keys and advertises their public halves.
    pub fn advertise(&mut self) -> Result<Signed<AdvertiseKeys>, SecAggError> {
        if !matches!(self.stage, Stage::Fresh) {
            return Err(SecAggError::UnexpectedMessage(
                "advertise after the round started",
            ));
        }
        let enc_secret = random_secret(&mut self.rng);
        let mask_secret = random_secret(&mut self.rng);
        let mut self_seed = Zeroizing::new([0u8; 32]);
        self.rng.fill_bytes(self_seed.as_mut());
        let body = AdvertiseKeys {
            client: self.index,
            enc_public: PublicKey::from(&enc_secret).to_bytes(),
            mask_public: PublicKey::from(&mask_secret).to_bytes(),
        };
        self.secrets = Some(RoundSecrets {
            enc_secret,
            mask_secret,
            self_seed,
        });
        self.stage = Stage::Advertised;
        Signed::sign(&self.identity, &self.params.session, body)
    }

    /// Checks the forwarded advertisements: signed by their owners, from
    /// distinct neighbours. Returns them by client index.
    fn check_adverts(
        &self,
        msg: &NeighbourKeys,
    ) -> Result<BTreeMap<u32, AdvertiseKeys>, SecAggError> {
        let mut neighbours = BTreeMap::new();
        for advert in &msg.adverts {
            let v = advert.body.client;
            if !self.params.graph.are_neighbours(self.index, v) {
                return Err(SecAggError::UnknownClient {
                    client: v,
                    reason: "not a neighbour",
                });
            }
            let key = &self.params.participants[v as usize];
            let body = advert.verify(key, &self.params.session, v)?;
            if neighbours.insert(v, body.clone()).is_some() {
                return Err(SecAggError::Duplicate(v));
            }
        }
        if neighbours.len() < self.params.threshold {
            return Err(SecAggError::TooFewClients {
                stage: "share keys",
                alive: neighbours.len(),
                need: self.params.threshold,
            });
        }
        Ok(neighbours)
    }

    /// Round 1: shares the self-mask seed and mask key among the neighbours
    /// that advertised, each share pair encrypted to its recipient.
    pub fn share_keys(&mut self, msg: &NeighbourKeys) -> Result<Signed<ShareKeys>, SecAggError> {
        let (Stage::Advertised, Some(secrets)) = (&self.stage, &self.secrets) else {
            return Err(SecAggError::UnexpectedMessage(
                "neighbour keys before advertising",
            ));
        };
        let neighbours = self.check_adverts(msg)?;
        let xs: Vec<u64> = neighbours.keys().map(|&v| u64::from(v) + 1).collect();
        let t = self.params.threshold;
        let to_bad = |e: shamir::ShamirError| SecAggError::BadParams(e.to_string());
        let seed_shares =
            shamir::split(&secrets.self_seed, t, &xs, &mut self.rng).map_err(to_bad)?;
        let key_bytes = Zeroizing::new(secrets.mask_secret.to_bytes());
        let key_shares = shamir::split(&key_bytes, t, &xs, &mut self.rng).map_err(to_bad)?;
        let mut shares = Vec::with_capacity(neighbours.len());
        let mut enc_shared = BTreeMap::new();
        for ((v, advert), (self_seed, mask_key)) in neighbours
            .iter()
            .zip(seed_shares.into_iter().zip(key_shares))
        {
            let plain = Zeroizing::new(
                postcard::to_allocvec(&SharePair {
                    self_seed,
                    mask_key,
                })
                .map_err(|e| SecAggError::Malformed(e.to_string()))?,
            );
            let shared = agree(&secrets.enc_secret, &advert.enc_public, *v)?;
            let ciphertext = seal_share(&self.params.session, &shared, self.index, *v, &plain)?;
            enc_shared.insert(*v, shared);
            shares.push(EncryptedShare {
                from: self.index,
                to: *v,
                ciphertext,
            });
        }
        let body = ShareKeys {
            client: self.index,
            self_seed_commitment: seed_commitment(
                &self.params.session,
                self.index,
                &secrets.self_seed,
            ),
            shares,
        };
        self.stage = Stage::Shared {
            neighbours,
            enc_shared,
        };
        Signed::sign(&self.identity, &self.params.session, body)
    }

    /// Decrypts the shares addressed to this client.
    fn open_shares(
        &self,
        msg: &SharesForClient,
        enc_shared: &BTreeMap<u32, Zeroizing<[u8; 32]>>,
    ) -> Result<BTreeMap<u32, SharePair>, SecAggError> {
        let mut received = BTreeMap::new();
        for share in &msg.shares {
            let shared = enc_shared
                .get(&share.from)
                .ok_or(SecAggError::UnknownClient {
                    client: share.from,
                    reason: "share from a non-neighbour",
                })?;
            if share.to != self.index {
                return Err(SecAggError::ShareRejected {
                    from: share.from,
                    reason: "addressed to another client",
                });
            }
            let plain = open_share(
                &self.params.session,
                shared,
                share.from,
                self.index,
                &share.ciphertext,
            )?;
            let pair: SharePair =
                postcard::from_bytes(&plain).map_err(|_| SecAggError::ShareRejected {
                    from: share.from,
                    reason: "does not decode",
                })?;
            if received.insert(share.from, pair).is_some() {
                return Err(SecAggError::Duplicate(share.from));
            }
        }
        if received.len() < self.params.threshold {
            return Err(SecAggError::TooFewClients {
                stage: "masked input",
                alive: received.len(),
                need: self.params.threshold,
            });
        }
        Ok(received)
    }

    /// Round 2: quantizes and masks `update` with the self mask and a pairwise
    /// mask for every neighbour whose shares arrived.
    pub fn masked_input(
        &mut self,
        msg: &SharesForClient,
        update: &[f32],
    ) -> Result<Signed<MaskedInput>, SecAggError> {
        let (
            Stage::Shared {
                neighbours,
                enc_shared,
            },
            Some(secrets),
        ) = (&self.stage, &self.secrets)
        else {
            return Err(SecAggError::UnexpectedMessage("shares before sharing keys"));
        };
        if update.len() != self.params.dimension {
            return Err(SecAggError::Malformed(format!(
                "update has {} values, the round expects {}",
                update.len(),
                self.params.dimension
            )));
        }
        let received = self.open_shares(msg, enc_shared)?;
        let modulus = self.params.modulus;
        let mut values = encode_update(update, &self.params, &mut self.rounding);
        apply_mask(&mut values, &secrets.self_seed, modulus, Sign::Add);
        for v in received.keys() {
            let shared = agree(&secrets.mask_secret, &neighbours[v].mask_public, *v)?;
            let seed = pairwise_seed(&self.params.session, &shared, self.index, *v);
            let sign = if self.index < *v {
                Sign::Add
            } else {
                Sign::Sub
            };
            apply_mask(&mut values, &seed, modulus, sign);
        }
        let body = MaskedInput {
            client: self.index,
            values: WireBytes(pack(&values, modulus)),
        };
        self.stage = Stage::Masked { received };
        Signed::sign(&self.identity, &self.params.session, body)
    }

    /// Round 3: reveals, for each neighbour, the self-seed share if it
    /// survived or the mask-key share if it dropped (never both), then erases
    /// the round's secrets.
    pub fn unmask(&mut self, request: &UnmaskRequest) -> Result<Signed<UnmaskShares>, SecAggError> {
        let Stage::Masked { received } = &self.stage else {
            return Err(SecAggError::UnexpectedMessage(
                "unmask request before masked input",
            ));
        };
        let survivors: std::collections::BTreeSet<u32> =
            request.survivors.iter().copied().collect();
        let dropped: std::collections::BTreeSet<u32> = request.dropped.iter().copied().collect();
        if survivors.len() != request.survivors.len()
            || dropped.len() != request.dropped.len()
            || !survivors.is_disjoint(&dropped)
        {
            return Err(SecAggError::Malformed(
                "survivor and dropout lists overlap or repeat".into(),
            ));
        }
        if !survivors.contains(&self.index) {
            return Err(SecAggError::UnknownClient {
                client: self.index,
                reason: "this client is not listed as a survivor",
            });
        }
        if survivors.len() < self.params.threshold {
            return Err(SecAggError::TooFewClients {
                stage: "unmask",
                alive: survivors.len(),
                need: self.params.threshold,
            });
        }
        let pick = |set: &std::collections::BTreeSet<u32>, which: fn(&SharePair) -> ShareValue| {
            received
                .iter()
                .filter(|(v, _)| set.contains(v))
                .map(|(v, p)| (*v, which(p)))
                .collect::<Vec<_>>()
        };
        let body = UnmaskShares {
            client: self.index,
            self_seed_shares: pick(&survivors, |p| p.self_seed),
            mask_key_shares: pick(&dropped, |p| p.mask_key),
        };
        self.secrets = None;
        self.stage = Stage::Done;
        Signed::sign(&self.identity, &self.params.session, body)
    }
}
