//! Admin bearer tokens for the HTTP API, derived from the mesh CA.
//!
//! A token is a short-lived statement signed by a node key whose certificate
//! the mesh CA issued: "the holder of this certificate acts on mesh M until
//! time T". The server checks it as it checks a peer: certificate chain to the
//! pinned CA, validity, revocation, then the signature of the statement with
//! the certificate's key, then the RBAC role for the action asked. There is no
//! shared secret to leak: stealing a token gives access until it expires
//! (at most [`MAX_TOKEN_LIFETIME_S`]), and revoking the certificate ends it.
//!
//! Wire form: `hex(postcard(AdminToken))`, sent as `Authorization: Bearer ...`.

use ed25519_dalek::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::ca::{CertError, CertVerifier, RevocationList, VerifiedCert};
use crate::identity::verify_signature;
use crate::rbac::{authorize, Action, RbacError};
use crate::NodeIdentity;

/// Tokens may not live longer than this (one day).
pub const MAX_TOKEN_LIFETIME_S: i64 = 86_400;
/// Accepted clock skew between the token's issuer and the server.
pub const TOKEN_SKEW_S: i64 = 60;
/// Upper bound on an encoded token (hex characters); longer input is refused before decoding.
pub const MAX_TOKEN_CHARS: usize = 8_192;
const DOMAIN: &[u8] = b"agent-mesh admin token v1";

/// Why a token was refused. None of these is worth retrying with the same token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// The text is not a token (bad hex, bad encoding, too long).
    #[error("malformed token: {0}")]
    Malformed(String),
    /// The token names another mesh.
    #[error("token is for mesh {got:?}, this is mesh {expected:?}")]
    WrongMesh {
        /// The mesh this server belongs to.
        expected: String,
        /// The mesh named in the token.
        got: String,
    },
    /// The token's lifetime is outside the allowed window (expired, not yet valid, too long).
    #[error("token not valid now: {0}")]
    Expired(String),
    /// The certificate inside the token did not verify.
    #[error("token certificate refused: {0}")]
    Certificate(#[from] CertError),
    /// The statement's signature does not verify with the certificate's key.
    #[error("token signature does not verify")]
    BadSignature,
    /// The certificate's roles do not allow the action.
    #[error("{0}")]
    Forbidden(#[from] RbacError),
}

/// A signed, time-limited statement binding a CA-issued certificate to a mesh.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdminToken {
    /// The mesh the token is for.
    pub mesh_id: String,
    /// The signer's certificate (DER).
    pub cert_der: Vec<u8>,
    /// Start of validity, Unix seconds.
    pub issued_unix_s: i64,
    /// End of validity, Unix seconds.
    pub expires_unix_s: i64,
    /// Ed25519 signature over the statement (see [`AdminToken::statement`]).
    pub signature: Vec<u8>,
}

impl AdminToken {
    /// Signs a token valid from `now_unix_s` for `lifetime_s` seconds.
    pub fn sign(
        identity: &NodeIdentity,
        cert_der: Vec<u8>,
        mesh_id: &str,
        now_unix_s: i64,
        lifetime_s: i64,
    ) -> Result<Self, TokenError> {
        if !(1..=MAX_TOKEN_LIFETIME_S).contains(&lifetime_s) {
            return Err(TokenError::Expired(format!(
                "lifetime {lifetime_s} s is outside 1..={MAX_TOKEN_LIFETIME_S} s"
            )));
        }
        let mut token = Self {
            mesh_id: mesh_id.to_owned(),
            cert_der,
            issued_unix_s: now_unix_s,
            expires_unix_s: now_unix_s + lifetime_s,
            signature: Vec::new(),
        };
        token.signature = identity.sign(&token.statement()).to_bytes().to_vec();
        Ok(token)
    }

    /// The bytes that are signed: a domain tag, the mesh, the certificate and the validity.
    fn statement(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(DOMAIN.len() + self.cert_der.len() + 64);
        out.extend_from_slice(DOMAIN);
        out.extend_from_slice(&(self.mesh_id.len() as u64).to_le_bytes());
        out.extend_from_slice(self.mesh_id.as_bytes());
        out.extend_from_slice(&(self.cert_der.len() as u64).to_le_bytes());
        out.extend_from_slice(&self.cert_der);
        out.extend_from_slice(&self.issued_unix_s.to_le_bytes());
        out.extend_from_slice(&self.expires_unix_s.to_le_bytes());
        out
    }

    /// The bearer text: hex of the postcard encoding.
    pub fn encode(&self) -> Result<String, TokenError> {
        postcard::to_allocvec(self)
            .map(hex::encode)
            .map_err(|e| TokenError::Malformed(e.to_string()))
    }

    /// Parses bearer text, refusing oversized input before decoding.
    pub fn decode(text: &str) -> Result<Self, TokenError> {
        let text = text.trim();
        if text.len() > MAX_TOKEN_CHARS {
            return Err(TokenError::Malformed(format!(
                "{} characters, the limit is {MAX_TOKEN_CHARS}",
                text.len()
            )));
        }
        let bytes = hex::decode(text).map_err(|e| TokenError::Malformed(e.to_string()))?;
        postcard::from_bytes(&bytes).map_err(|e| TokenError::Malformed(e.to_string()))
    }

    /// Checks the token fully and that its certificate may perform `action`.
    pub fn verify_for(
        &self,
        verifier: &CertVerifier,
        mesh_id: &str,
        now_unix_s: i64,
        revocations: &RevocationList,
        action: Action,
    ) -> Result<VerifiedCert, TokenError> {
        if self.mesh_id != mesh_id {
            return Err(TokenError::WrongMesh {
                expected: mesh_id.to_owned(),
                got: self.mesh_id.clone(),
            });
        }
        self.check_window(now_unix_s)?;
        let cert = verifier.verify(&self.cert_der, None, now_unix_s, revocations)?;
        let key = VerifyingKey::from_bytes(cert.info.node_id.as_bytes())
            .map_err(|_| TokenError::BadSignature)?;
        let signature =
            Signature::from_slice(&self.signature).map_err(|_| TokenError::BadSignature)?;
        verify_signature(&key, &self.statement(), &signature)
            .map_err(|_| TokenError::BadSignature)?;
        authorize(&cert, action)?;
        Ok(cert)
    }

    fn check_window(&self, now_unix_s: i64) -> Result<(), TokenError> {
        let lifetime_s = self.expires_unix_s - self.issued_unix_s;
        if !(1..=MAX_TOKEN_LIFETIME_S).contains(&lifetime_s) {
            return Err(TokenError::Expired(format!(
                "lifetime {lifetime_s} s exceeds {MAX_TOKEN_LIFETIME_S} s"
            )));
        }
        if now_unix_s + TOKEN_SKEW_S < self.issued_unix_s {
            return Err(TokenError::Expired(format!(
                "issued at {} is in the future (now {now_unix_s})",
                self.issued_unix_s
            )));
        }
        if now_unix_s > self.expires_unix_s + TOKEN_SKEW_S {
            return Err(TokenError::Expired(format!(
                "expired at {} (now {now_unix_s})",
                self.expires_unix_s
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{ca_pin, MeshCa, RevocationEntry, SignedRevocation};
    use crate::rbac::{Role, RoleSet};

    const NOW: i64 = 1_800_000_000;

    fn setup(roles: &[Role]) -> (MeshCa, CertVerifier, NodeIdentity, Vec<u8>) {
        let ca = MeshCa::init(
            NodeIdentity::from_seed(&[1; 32]),
            "test CA",
            NOW - 100,
            NOW + 10_000,
            [1; 16],
        )
        .expect("ca");
        let verifier =
            CertVerifier::new(ca.cert_der().to_vec(), &ca_pin(ca.cert_der())).expect("verifier");
        let admin = NodeIdentity::from_seed(&[2; 32]);
        let cert = ca
            .issue(
                &admin.verifying_key(),
                RoleSet::of(roles),
                NOW - 10,
                NOW + 5_000,
                [7; 16],
            )
            .expect("issue");
        (ca, verifier, admin, cert.der)
    }

    #[test]
    fn admin_token_round_trips_and_authorizes_submit() {
        let (_, verifier, admin, cert) = setup(&[Role::Admin]);
        let token = AdminToken::sign(&admin, cert, "m", NOW, 600).expect("sign");
        let parsed = AdminToken::decode(&token.encode().expect("encode")).expect("decode");
        parsed
            .verify_for(
                &verifier,
                "m",
                NOW + 10,
                &RevocationList::new(),
                Action::SubmitJob,
            )
            .expect("valid");
    }

    #[test]
    fn observer_token_is_forbidden_to_submit_but_may_read() {
        let (_, verifier, observer, cert) = setup(&[Role::Observer]);
        let token = AdminToken::sign(&observer, cert, "m", NOW, 600).expect("sign");
        let none = RevocationList::new();
        assert!(matches!(
            token.verify_for(&verifier, "m", NOW, &none, Action::SubmitJob),
            Err(TokenError::Forbidden(_))
        ));
        token
            .verify_for(&verifier, "m", NOW, &none, Action::ReadStatus)
            .expect("read");
    }

    #[test]
    fn expired_wrong_mesh_tampered_and_revoked_tokens_are_refused() {
        let (ca, verifier, admin, cert) = setup(&[Role::Admin]);
        let none = RevocationList::new();
        let token = AdminToken::sign(&admin, cert, "m", NOW, 600).expect("sign");
        let act = Action::SubmitJob;
        assert!(matches!(
            token.verify_for(&verifier, "m", NOW + 2_000, &none, act),
            Err(TokenError::Expired(_))
        ));
        assert!(matches!(
            token.verify_for(&verifier, "other", NOW, &none, act),
            Err(TokenError::WrongMesh { .. })
        ));
        let mut stretched = token.clone();
        stretched.expires_unix_s += 100;
        assert!(matches!(
            stretched.verify_for(&verifier, "m", NOW, &none, act),
            Err(TokenError::BadSignature)
        ));
        let mut revocations = RevocationList::new();
        let entry = RevocationEntry {
            serial: crate::ca::CertInfo::parse(&token.cert_der)
                .expect("parse")
                .serial,
            node_id: admin.node_id(),
            revoked_at_unix_s: NOW,
            reason: "lost laptop".into(),
        };
        let signed = SignedRevocation::sign(ca.identity(), entry).expect("sign revocation");
        revocations
            .insert(&signed, verifier.ca_key())
            .expect("insert");
        assert!(matches!(
            token.verify_for(&verifier, "m", NOW, &revocations, act),
            Err(TokenError::Certificate(CertError::Revoked { .. }))
        ));
    }

    #[test]
    fn garbage_and_oversized_text_is_malformed() {
        assert!(matches!(
            AdminToken::decode("zz"),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            AdminToken::decode(&"ab".repeat(MAX_TOKEN_CHARS)),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            AdminToken::decode("00ff"),
            Err(TokenError::Malformed(_))
        ));
    }
}
