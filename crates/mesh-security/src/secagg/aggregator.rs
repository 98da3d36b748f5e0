//! The SecAgg+ aggregator state machine.
//!
//! It keeps only a running sum of masked inputs (never an individual vector
//! beyond the call that adds it) and the small per-client key material.

use std::collections::{BTreeMap, BTreeSet};

use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use super::keys::{agree, pairwise_seed, seed_commitment};
use super::messages::{
    AdvertiseKeys, EncryptedShare, MaskedInput, NeighbourKeys, ShareKeys, SharesForClient, Signed,
    UnmaskRequest, UnmaskShares,
};
use super::params::SecAggParams;
use super::prg::{add_packed, apply_mask, Sign};
use super::quantize::to_signed;
use super::shamir::{self, ShareValue};
use super::SecAggError;

/// The unmasked result of a round.
#[derive(Clone, Debug, PartialEq)]
pub struct AggregateOutput {
    /// Clients whose updates are in the sum, sorted.
    pub contributors: Vec<u32>,
    /// Exact sum of the contributors' quantized updates.
    pub sum_quantized: Vec<i64>,
    /// The sum dequantized (divided by the scale).
    pub sum: Vec<f64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    Advertising,
    Sharing,
    Masking,
    Unmasking,
    Done,
}

/// The aggregator's side of a SecAgg+ round.
#[derive(Debug)]
pub struct SecAggAggregator {
    params: SecAggParams,
    stage: Stage,
    adverts: BTreeMap<u32, Signed<AdvertiseKeys>>,
    shares: BTreeMap<u32, ShareKeys>,
    masked_sum: Vec<u64>,
    masked_from: BTreeSet<u32>,
    unmask: BTreeMap<u32, UnmaskShares>,
}

impl SecAggAggregator {
    /// An aggregator for a round with `params`.
    pub fn new(params: SecAggParams) -> Result<Self, SecAggError> {
        params.validate()?;
        let masked_sum = vec![0; params.dimension];
        Ok(Self {
            params,
            stage: Stage::Advertising,
            adverts: BTreeMap::new(),
            shares: BTreeMap::new(),
            masked_sum,
            masked_from: BTreeSet::new(),
            unmask: BTreeMap::new(),
        })
    }

    fn expect(&self, stage: Stage, what: &'static str) -> Result<(), SecAggError> {
        if self.stage == stage {
            Ok(())
        } else {
            Err(SecAggError::UnexpectedMessage(what))
        }
    }

    fn verify<'m, T: serde::Serialize>(
        &self,
        msg: &'m Signed<T>,
        client: u32,
    ) -> Result<&'m T, SecAggError> {
        let key =
            self.params
                .participants
                .get(client as usize)
                .ok_or(SecAggError::UnknownClient {
                    client,
                    reason: "index outside the group",
                })?;
        msg.verify(key, &self.params.session, client)
    }

    /// Round 0 input: one client's signed key advertisement.
    pub fn receive_advert(&mut self, msg: Signed<AdvertiseKeys>) -> Result<(), SecAggError> {
        self.expect(Stage::Advertising, "advertisement after advertising closed")?;
        let client = msg.body.client;
        self.verify(&msg, client)?;
        if self.adverts.contains_key(&client) {
            return Err(SecAggError::Duplicate(client));
        }
        self.adverts.insert(client, msg);
        Ok(())
    }

    fn require(&self, stage: &'static str, alive: usize) -> Result<(), SecAggError> {
        let need = self.params.threshold.max(2);
        if alive < need {
            return Err(SecAggError::TooFewClients { stage, alive, need });
        }
        Ok(())
    }

    /// Closes round 0: for each advertised client, its advertised neighbours' keys.
    ///
    /// A client with fewer advertised neighbours than the threshold could not
    /// share its secrets, so it is treated as dropped here, and so are the
    /// clients left short by its removal: the step fails now, not one
    /// timeout later, when too few clients can go on.
    pub fn finish_advertising(&mut self) -> Result<Vec<(u32, NeighbourKeys)>, SecAggError> {
        self.expect(Stage::Advertising, "advertising already closed")?;
        self.drop_isolated_adverts();
        self.require("advertise", self.adverts.len())?;
        self.stage = Stage::Sharing;
        let graph = &self.params.graph;
        Ok(self
            .adverts
            .keys()
            .map(|&u| {
                let adverts = graph
                    .neighbours(u)
                    .iter()
                    .filter_map(|v| self.adverts.get(v).cloned())
                    .collect();
                (u, NeighbourKeys { adverts })
            })
            .collect())
    }

    /// Removes, until none is left, adverts whose client has fewer advertised
    /// neighbours than the threshold.
    fn drop_isolated_adverts(&mut self) {
        let graph = &self.params.graph;
        let threshold = self.params.threshold;
        loop {
            let isolated: Vec<u32> = self
                .adverts
                .keys()
                .copied()
                .filter(|&u| {
                    let advertised = graph
                        .neighbours(u)
                        .iter()
                        .filter(|v| self.adverts.contains_key(v))
                        .count();
                    advertised < threshold
                })
                .collect();
            if isolated.is_empty() {
                return;
            }
            for u in isolated {
                self.adverts.remove(&u);
            }
        }
    }

    /// Round 1 input: one client's encrypted shares.
    pub fn receive_shares(&mut self, msg: Signed<ShareKeys>) -> Result<(), SecAggError> {
        self.expect(Stage::Sharing, "shares outside the sharing step")?;
        let client = msg.body.client;
        if !self.adverts.contains_key(&client) {
            return Err(SecAggError::UnknownClient {
                client,
                reason: "did not advertise keys",
            });
        }
        self.verify(&msg, client)?;
        if self.shares.contains_key(&client) {
            return Err(SecAggError::Duplicate(client));
        }
        let mut seen = BTreeSet::new();
        for share in &msg.body.shares {
            let to_ok = self.params.graph.are_neighbours(client, share.to)
                && self.adverts.contains_key(&share.to);
            if share.from != client || !to_ok || !seen.insert(share.to) {
                return Err(SecAggError::ShareRejected {
                    from: client,
                    reason: "share addressed outside the advertised neighbourhood",
                });
            }
        }
        self.shares.insert(client, msg.body);
        Ok(())
    }

    /// Closes round 1: for each client that shared, the shares addressed to it.
    ///
    /// A client that would receive fewer shares than the threshold cannot
    /// mask its input, so it gets none and counts as dropped after sharing
    /// (the shares it gave out still let the survivors remove its masks);
    /// the step fails now, not at the collection deadline, when too few
    /// clients can go on.
    pub fn finish_sharing(&mut self) -> Result<Vec<(u32, SharesForClient)>, SecAggError> {
        self.expect(Stage::Sharing, "sharing already closed")?;
        self.require("share keys", self.shares.len())?;
        let mut inbox: BTreeMap<u32, Vec<EncryptedShare>> =
            self.shares.keys().map(|&u| (u, Vec::new())).collect();
        for msg in self.shares.values() {
            for share in &msg.shares {
                if let Some(list) = inbox.get_mut(&share.to) {
                    list.push(share.clone());
                }
            }
        }
        let threshold = self.params.threshold;
        inbox.retain(|_, shares| shares.len() >= threshold);
        self.require("masked input", inbox.len())?;
        self.stage = Stage::Masking;
        Ok(inbox
            .into_iter()
            .map(|(u, shares)| (u, SharesForClient { shares }))
            .collect())
    }

    /// Round 2 input: one client's masked update, added to the running sum.
    pub fn receive_masked_input(&mut self, msg: Signed<MaskedInput>) -> Result<(), SecAggError> {
        self.expect(Stage::Masking, "masked input outside the masking step")?;
        let client = msg.body.client;
        if !self.shares.contains_key(&client) {
            return Err(SecAggError::UnknownClient {
                client,
                reason: "did not share keys",
            });
        }
        if self.masked_from.contains(&client) {
            return Err(SecAggError::Duplicate(client));
        }
        if msg.body.values.0.len() != self.params.masked_bytes() {
            return Err(SecAggError::Malformed(format!(
                "masked input of {} bytes, expected {}",
                msg.body.values.0.len(),
                self.params.masked_bytes()
            )));
        }
        self.verify(&msg, client)?;
        add_packed(
            &mut self.masked_sum,
            &msg.body.values.0,
            self.params.modulus,
        );
        self.masked_from.insert(client);
        Ok(())
    }

    /// Closes round 2: tells survivors who is in the sum and who dropped.
    pub fn finish_masking(&mut self) -> Result<UnmaskRequest, SecAggError> {
        self.expect(Stage::Masking, "masking already closed")?;
        self.require("masked input", self.masked_from.len())?;
        self.stage = Stage::Unmasking;
        Ok(UnmaskRequest {
            survivors: self.masked_from.iter().copied().collect(),
            dropped: self
                .shares
                .keys()
                .filter(|u| !self.masked_from.contains(u))
                .copied()
                .collect(),
        })
    }

    /// Round 3 input: one survivor's revealed shares.
    pub fn receive_unmask(&mut self, msg: Signed<UnmaskShares>) -> Result<(), SecAggError> {
        self.expect(Stage::Unmasking, "unmask shares outside the unmasking step")?;
        let client = msg.body.client;
        if !self.masked_from.contains(&client) {
            return Err(SecAggError::UnknownClient {
                client,
                reason: "not a survivor",
            });
        }
        if self.unmask.contains_key(&client) {
            return Err(SecAggError::Duplicate(client));
        }
        self.verify(&msg, client)?;
        let graph = &self.params.graph;
        let seeds_ok = msg
            .body
            .self_seed_shares
            .iter()
            .all(|(v, _)| self.masked_from.contains(v) && graph.are_neighbours(client, *v));
        let keys_ok = msg.body.mask_key_shares.iter().all(|(v, _)| {
            !self.masked_from.contains(v)
                && self.shares.contains_key(v)
                && graph.are_neighbours(client, *v)
        });
        let owners: BTreeSet<u32> = msg
            .body
            .self_seed_shares
            .iter()
            .chain(&msg.body.mask_key_shares)
            .map(|(v, _)| *v)
            .collect();
        let distinct =
            owners.len() == msg.body.self_seed_shares.len() + msg.body.mask_key_shares.len();
        if !seeds_ok || !keys_ok || !distinct {
            return Err(SecAggError::ShareRejected {
                from: client,
                reason: "revealed a share the aggregator must not have",
            });
        }
        self.unmask.insert(client, msg.body);
        Ok(())
    }

    /// Collects the revealed shares of `owner`'s secret (x = holder + 1).
    fn shares_of(&self, owner: u32, self_seed: bool) -> Vec<(u64, ShareValue)> {
        self.unmask
            .values()
            .filter_map(|m| {
                let list = if self_seed {
                    &m.self_seed_shares
                } else {
                    &m.mask_key_shares
                };
                list.iter()
                    .find(|(v, _)| *v == owner)
                    .map(|(_, s)| (u64::from(m.client) + 1, *s))
            })
            .collect()
    }

    fn reconstruct(&self, owner: u32, self_seed: bool) -> Result<Zeroizing<[u8; 32]>, SecAggError> {
        let secret = if self_seed {
            "self-mask seed"
        } else {
            "mask key"
        };
        let points = self.shares_of(owner, self_seed);
        let need = self.params.threshold;
        if points.len() < need {
            return Err(SecAggError::NotEnoughShares {
                client: owner,
                secret,
                have: points.len(),
                need,
            });
        }
        shamir::reconstruct(&points, need)
            .map(Zeroizing::new)
            .map_err(|_| SecAggError::ReconstructionMismatch {
                client: owner,
                secret,
            })
    }

    /// Removes `u`'s self mask after checking the seed against its commitment.
    fn remove_self_mask(&mut self, u: u32) -> Result<(), SecAggError> {
        let seed = self.reconstruct(u, true)?;
        let committed = self.shares.get(&u).map(|s| s.self_seed_commitment);
        if committed != Some(seed_commitment(&self.params.session, u, &seed)) {
            return Err(SecAggError::ReconstructionMismatch {
                client: u,
                secret: "self-mask seed",
            });
        }
        apply_mask(&mut self.masked_sum, &seed, self.params.modulus, Sign::Sub);
        Ok(())
    }

    /// Removes the pairwise masks survivors added for dropped client `v`.
    fn remove_pairwise_masks(&mut self, v: u32) -> Result<(), SecAggError> {
        let key_bytes = self.reconstruct(v, false)?;
        let secret = StaticSecret::from(*key_bytes);
        let advert = self.adverts.get(&v).ok_or(SecAggError::UnknownClient {
            client: v,
            reason: "no advertisement",
        })?;
        if PublicKey::from(&secret).to_bytes() != advert.body.mask_public {
            return Err(SecAggError::ReconstructionMismatch {
                client: v,
                secret: "mask key",
            });
        }
        let survivors: Vec<u32> = self
            .params
            .graph
            .neighbours(v)
            .iter()
            .copied()
            .filter(|w| self.masked_from.contains(w))
            .collect();
        for w in survivors {
            let w_public = self.adverts.get(&w).map(|a| a.body.mask_public).ok_or(
                SecAggError::UnknownClient {
                    client: w,
                    reason: "no advertisement",
                },
            )?;
            let shared = agree(&secret, &w_public, w)?;
            let seed = pairwise_seed(&self.params.session, &shared, v, w);
            // w added +mask if w < v, -mask otherwise: undo it.
            let sign = if w < v { Sign::Sub } else { Sign::Add };
            apply_mask(&mut self.masked_sum, &seed, self.params.modulus, sign);
        }
        Ok(())
    }

    /// Closes round 3: unmasks and returns the sum. Fails with
    /// [`SecAggError::NotEnoughShares`] rather than return a wrong sum; after
    /// any outcome the round is over.
    pub fn finish(&mut self) -> Result<AggregateOutput, SecAggError> {
        self.expect(Stage::Unmasking, "finish outside the unmasking step")?;
        let result = self.unmask_sum();
        self.stage = Stage::Done;
        result
    }

    fn unmask_sum(&mut self) -> Result<AggregateOutput, SecAggError> {
        self.require("unmask", self.unmask.len())?;
        let survivors: Vec<u32> = self.masked_from.iter().copied().collect();
        let dropped: Vec<u32> = self
            .shares
            .keys()
            .filter(|u| !self.masked_from.contains(u))
            .copied()
            .collect();
        // Check every secret can be rebuilt before touching the sum.
        for &u in &survivors {
            self.reconstruct(u, true)?;
        }
        for &v in &dropped {
            self.reconstruct(v, false)?;
        }
        for &u in &survivors {
            self.remove_self_mask(u)?;
        }
        for &v in &dropped {
            self.remove_pairwise_masks(v)?;
        }
        let mask = self.params.modulus.mask();
        let scale = self.params.scale();
        let sum_quantized: Vec<i64> = self
            .masked_sum
            .iter()
            .map(|&s| to_signed(s & mask, &self.params))
            .collect();
        let sum = sum_quantized.iter().map(|&q| q as f64 / scale).collect();
        self.masked_sum = Vec::new();
        Ok(AggregateOutput {
            contributors: survivors,
            sum_quantized,
            sum,
        })
    }
}
