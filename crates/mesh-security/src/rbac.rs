//! Role-based access control: five roles, a table of actions, and one
//! [`authorize`] function that every action and API call goes through.
//!
//! Roles come from a node's verified certificate ([`crate::ca::VerifiedCert`]);
//! there is no implicit hierarchy: an admin that should also vote must hold the
//! committee role too. The table is [`required_roles`]: an action is allowed
//! when the certificate holds at least one of the roles listed for it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A role a certificate can grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Role {
    /// Operates the mesh: jobs, certificates, membership.
    Admin,
    /// Votes in the Raft committee and commits mesh state.
    Committee,
    /// Aggregates updates for a shard.
    Aggregator,
    /// Trains locally and submits updates.
    Trainer,
    /// Reads status and metrics only.
    Observer,
}

impl Role {
    /// All roles, in a fixed order.
    pub const ALL: [Role; 5] = [
        Role::Admin,
        Role::Committee,
        Role::Aggregator,
        Role::Trainer,
        Role::Observer,
    ];

    /// The lower-case name used in certificates and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Committee => "committee",
            Role::Aggregator => "aggregator",
            Role::Trainer => "trainer",
            Role::Observer => "observer",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Role {
    type Err = RbacError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.name() == s.trim())
            .ok_or_else(|| RbacError::UnknownRole(s.to_string()))
    }
}

/// A set of roles (a small bit set).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RoleSet(u8);

impl RoleSet {
    /// The empty set.
    pub const EMPTY: RoleSet = RoleSet(0);

    /// A set holding exactly these roles.
    pub fn of(roles: &[Role]) -> Self {
        Self(roles.iter().fold(0, |acc, r| acc | r.bit()))
    }

    /// Whether `role` is in the set.
    pub fn contains(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The roles in the set, in [`Role::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL.into_iter().filter(move |r| self.contains(*r))
    }

    /// Parses a comma-separated list such as `trainer,observer`.
    pub fn parse_list(list: &str) -> Result<Self, RbacError> {
        let roles = list
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(str::parse)
            .collect::<Result<Vec<Role>, _>>()?;
        Ok(Self::of(&roles))
    }
}

impl fmt::Display for RoleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Role::name).collect();
        f.write_str(&names.join(","))
    }
}

impl fmt::Debug for RoleSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoleSet({self})")
    }
}

/// Every action that is subject to access control.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Action {
    /// Submit a federated-learning job.
    SubmitJob,
    /// Cancel a running job.
    CancelJob,
    /// Issue or renew a node certificate.
    IssueCertificate,
    /// Revoke a node certificate.
    RevokeCertificate,
    /// Add or remove committee members.
    ChangeMembership,
    /// Vote and replicate as a committee member.
    CommitteeVote,
    /// Propose an aggregate (group result) for a round.
    ProposeAggregate,
    /// Submit a (masked) model update.
    SubmitUpdate,
    /// Fetch a global model.
    FetchModel,
    /// Read job, round and mesh status.
    ReadStatus,
    /// Read metrics.
    ReadMetrics,
    /// Restore a node's reputation and lift its quarantine.
    ResetReputation,
}

impl Action {
    /// All actions, the rows of the table.
    pub const ALL: [Action; 12] = [
        Action::SubmitJob,
        Action::CancelJob,
        Action::IssueCertificate,
        Action::RevokeCertificate,
        Action::ChangeMembership,
        Action::CommitteeVote,
        Action::ProposeAggregate,
        Action::SubmitUpdate,
        Action::FetchModel,
        Action::ReadStatus,
        Action::ReadMetrics,
        Action::ResetReputation,
    ];
}

/// The table: which roles may perform an action (any one of them suffices).
pub fn required_roles(action: Action) -> RoleSet {
    use Role::*;
    match action {
        Action::SubmitJob | Action::CancelJob | Action::ResetReputation => RoleSet::of(&[Admin]),
        Action::IssueCertificate | Action::RevokeCertificate => RoleSet::of(&[Admin]),
        Action::ChangeMembership => RoleSet::of(&[Admin, Committee]),
        Action::CommitteeVote => RoleSet::of(&[Committee]),
        Action::ProposeAggregate => RoleSet::of(&[Aggregator]),
        Action::SubmitUpdate => RoleSet::of(&[Trainer]),
        Action::FetchModel => RoleSet::of(&[Admin, Committee, Aggregator, Trainer]),
        Action::ReadStatus | Action::ReadMetrics => RoleSet::of(&Role::ALL),
    }
}

/// Why access was denied, or a role name was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RbacError {
    /// The certificate lacks every role the action needs (retrying will not help).
    #[error("{action:?} needs one of the roles [{required}], the certificate holds [{held}]")]
    MissingRole {
        /// The action refused.
        action: Action,
        /// Roles any one of which would allow it.
        required: RoleSet,
        /// Roles the certificate holds.
        held: RoleSet,
    },
    /// A role name is not one of the five.
    #[error("unknown role {0:?} (expected admin, committee, aggregator, trainer or observer)")]
    UnknownRole(String),
}

/// Anything that carries verified roles (a verified certificate).
pub trait HasRoles {
    /// The roles granted.
    fn roles(&self) -> RoleSet;
}

/// Allows `action` if the certificate holds one of its required roles.
pub fn authorize(cert: &impl HasRoles, action: Action) -> Result<(), RbacError> {
    let held = cert.roles();
    let required = required_roles(action);
    if required.iter().any(|r| held.contains(r)) {
        Ok(())
    } else {
        Err(RbacError::MissingRole {
            action,
            required,
            held,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    struct Holder(RoleSet);
    impl HasRoles for Holder {
        fn roles(&self) -> RoleSet {
            self.0
        }
    }

    /// The table written out independently, one row per action.
    fn expected(action: Action) -> &'static [Role] {
        use Role::*;
        match action {
            Action::SubmitJob => &[Admin],
            Action::CancelJob => &[Admin],
            Action::IssueCertificate => &[Admin],
            Action::RevokeCertificate => &[Admin],
            Action::ChangeMembership => &[Admin, Committee],
            Action::CommitteeVote => &[Committee],
            Action::ProposeAggregate => &[Aggregator],
            Action::SubmitUpdate => &[Trainer],
            Action::FetchModel => &[Admin, Committee, Aggregator, Trainer],
            Action::ReadStatus => &[Admin, Committee, Aggregator, Trainer, Observer],
            Action::ReadMetrics => &[Admin, Committee, Aggregator, Trainer, Observer],
            Action::ResetReputation => &[Admin],
        }
    }

    #[test]
    fn every_row_allows_exactly_its_roles() {
        for action in Action::ALL {
            for role in Role::ALL {
                let result = authorize(&Holder(RoleSet::of(&[role])), action);
                let allowed = expected(action).contains(&role);
                assert_eq!(result.is_ok(), allowed, "{action:?} with {role}");
                if let Err(RbacError::MissingRole { required, held, .. }) = result {
                    assert_eq!(required, RoleSet::of(expected(action)));
                    assert_eq!(held, RoleSet::of(&[role]));
                }
            }
            assert!(
                authorize(&Holder(RoleSet::EMPTY), action).is_err(),
                "{action:?} with no role"
            );
        }
    }

    #[test]
    fn a_denial_names_the_missing_role() {
        let err = authorize(
            &Holder(RoleSet::of(&[Role::Observer])),
            Action::SubmitUpdate,
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("trainer") && text.contains("observer"),
            "{text}"
        );
    }

    #[test]
    fn role_lists_parse_and_print() {
        let set = RoleSet::parse_list("trainer, observer").unwrap();
        assert_eq!(set.to_string(), "trainer,observer");
        assert!(RoleSet::parse_list("root").is_err());
        for role in Role::ALL {
            assert_eq!(role.name().parse::<Role>().unwrap(), role);
        }
    }
}
