//! Membership: who is in the mesh, with which roles and in which zone, and
//! which certificates are revoked.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use mesh_security::ca::SignedRevocation;

use crate::command::{NodeId, RevocationReason, Role};
use crate::error::ApplyError;

/// Most members one mesh may hold.
pub const MEMBERS_MAX: usize = 100_000;
/// Most revocations the state may hold.
pub const REVOCATIONS_MAX: usize = 1_000_000;

/// One admitted node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// What it may do; never empty.
    pub roles: BTreeSet<Role>,
    /// Failure domain it declared, if any.
    pub zone: Option<String>,
    /// Log index of the entry that admitted it.
    pub joined_index: u64,
}

impl Member {
    /// A member admitted at log `joined_index`.
    pub fn new(roles: &BTreeSet<Role>, zone: Option<&str>, joined_index: u64) -> Self {
        Self {
            roles: roles.clone(),
            zone: zone.map(str::to_owned),
            joined_index,
        }
    }
}

/// One revoked certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    /// Why it was revoked.
    pub reason: RevocationReason,
    /// Log index of the entry that revoked it.
    pub revoked_index: u64,
    /// The revocation as the CA signed it; nodes check the signature before
    /// they refuse the certificate.
    pub signed: SignedRevocation,
}

/// Members and certificate revocations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    members: BTreeMap<NodeId, Member>,
    revoked: BTreeMap<Vec<u8>, Revocation>,
}

impl Members {
    /// The member with this id, if admitted.
    pub fn get(&self, node: &NodeId) -> Option<&Member> {
        self.members.get(node)
    }

    /// All members, in id order.
    pub fn iter(&self) -> impl Iterator<Item = (&NodeId, &Member)> {
        self.members.iter()
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the mesh has no members.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The revocation of this serial, if revoked.
    pub fn revocation(&self, serial: &[u8]) -> Option<&Revocation> {
        self.revoked.get(serial)
    }

    /// Number of revoked certificates.
    pub fn revoked_count(&self) -> usize {
        self.revoked.len()
    }

    /// Every revocation, in serial order.
    pub fn revocations(&self) -> impl Iterator<Item = &Revocation> {
        self.revoked.values()
    }

    /// Public keys of nodes whose certificate was revoked for any reason but
    /// [`RevocationReason::Superseded`] (a renewed certificate keeps its key):
    /// such a node is no longer eligible for the committee.
    pub fn revoked_keys(&self) -> BTreeSet<[u8; 32]> {
        self.revocations()
            .filter(|r| r.reason != RevocationReason::Superseded)
            .map(|r| *r.signed.entry.node_id.as_bytes())
            .collect()
    }

    pub(crate) fn add(&mut self, node: &NodeId, member: Member) -> Result<(), ApplyError> {
        if self.members.contains_key(node) {
            return Err(ApplyError::MemberExists(node.clone()));
        }
        if self.members.len() >= MEMBERS_MAX {
            return Err(ApplyError::TooManyMembers { max: MEMBERS_MAX });
        }
        self.members.insert(node.clone(), member);
        Ok(())
    }

    pub(crate) fn set_roles(
        &mut self,
        node: &NodeId,
        roles: &BTreeSet<Role>,
    ) -> Result<(), ApplyError> {
        let member = self
            .members
            .get_mut(node)
            .ok_or_else(|| ApplyError::UnknownMember(node.clone()))?;
        member.roles.clone_from(roles);
        Ok(())
    }

    pub(crate) fn remove(&mut self, node: &NodeId) -> Result<(), ApplyError> {
        self.members
            .remove(node)
            .map(|_| ())
            .ok_or_else(|| ApplyError::UnknownMember(node.clone()))
    }

    pub(crate) fn revoke(&mut self, revocation: Revocation) -> Result<(), ApplyError> {
        let serial = &revocation.signed.entry.serial;
        if self.revoked.contains_key(serial) {
            return Err(ApplyError::AlreadyRevoked {
                serial_hex: hex(serial),
            });
        }
        if self.revoked.len() >= REVOCATIONS_MAX {
            return Err(ApplyError::Invalid(format!(
                "the revocation list is full ({REVOCATIONS_MAX} entries)"
            )));
        }
        self.revoked.insert(serial.clone(), revocation);
        Ok(())
    }

    pub(crate) fn check_invariants(&self) -> Result<(), String> {
        if self.members.len() > MEMBERS_MAX || self.revoked.len() > REVOCATIONS_MAX {
            return Err("more members or revocations than the limits allow".into());
        }
        match self.members.iter().find(|(_, m)| m.roles.is_empty()) {
            Some((id, _)) => Err(format!("member {id} has no roles")),
            None => Ok(()),
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn member() -> Member {
        Member {
            roles: BTreeSet::from([Role::Trainer]),
            zone: Some("eu-1".into()),
            joined_index: 1,
        }
    }

    #[test]
    fn add_twice_is_rejected() {
        let mut m = Members::default();
        let n = NodeId::from("a");
        m.add(&n, member()).unwrap();
        assert_eq!(m.add(&n, member()), Err(ApplyError::MemberExists(n)));
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn set_roles_and_remove_need_a_member() {
        let mut m = Members::default();
        let n = NodeId::from("a");
        let roles = BTreeSet::from([Role::Admin]);
        assert!(m.set_roles(&n, &roles).is_err());
        assert!(m.remove(&n).is_err());
        m.add(&n, member()).unwrap();
        m.set_roles(&n, &roles).unwrap();
        assert_eq!(m.get(&n).unwrap().roles, roles);
        m.remove(&n).unwrap();
        assert!(m.is_empty());
    }

    #[test]
    fn revocation_is_final() {
        let mut m = Members::default();
        let r = Revocation {
            reason: RevocationReason::KeyCompromise,
            revoked_index: 4,
            signed: crate::state::test_revocation(&[1, 2]),
        };
        m.revoke(r.clone()).unwrap();
        let err = m.revoke(r.clone()).unwrap_err();
        assert!(err.is_permanent());
        assert!(err.to_string().contains("0102"));
        assert_eq!(m.revocation(&[1, 2]), Some(&r));
        assert_eq!(m.revocations().count(), 1);
        let renewed = Revocation {
            reason: RevocationReason::Superseded,
            revoked_index: 5,
            signed: crate::state::test_revocation(&[3]),
        };
        m.revoke(renewed).unwrap();
        let key = *r.signed.entry.node_id.as_bytes();
        assert_eq!(
            m.revoked_keys(),
            BTreeSet::from([key]),
            "a superseded certificate does not bar its key"
        );
    }
}
