//! Admin-token checks for the HTTP API's mutating endpoints.
//!
//! The token is `mesh_security::token::AdminToken` (a statement signed by a
//! CA-issued key). Checking it costs two signature verifications and a
//! certificate parse, so tokens that passed are remembered in a small bounded
//! cache keyed by their BLAKE3 hash until they expire; the cache is emptied
//! whenever the revocation list changes, so a revoked admin loses access at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::http::{header, HeaderMap, StatusCode};
use mesh_security::ca::{CertVerifier, RevocationList};
use mesh_security::rbac::{Action, RoleSet};
use mesh_security::token::{AdminToken, TokenError};

/// Most tokens remembered as verified.
pub const TOKEN_CACHE_ENTRIES_MAX: usize = 1_024;

/// Why a request was not authorized.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// No `Authorization: Bearer` header.
    #[error("this endpoint needs an admin token: Authorization: Bearer <token> (make one with `agent-mesh token`)")]
    Missing,
    /// The token was refused.
    #[error("{0}")]
    Refused(#[from] TokenError),
    /// The clock is before 1970.
    #[error("system clock is before the Unix epoch")]
    Clock,
}

impl AuthError {
    /// The HTTP status for this refusal: 403 when the roles are wrong, 401 otherwise.
    pub fn status(&self) -> StatusCode {
        match self {
            AuthError::Refused(TokenError::Forbidden(_)) => StatusCode::FORBIDDEN,
            AuthError::Clock => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::UNAUTHORIZED,
        }
    }
}

#[derive(Default)]
struct Cache {
    revocations_seen: usize,
    verified: HashMap<[u8; 32], (i64, RoleSet)>,
}

/// The request's bearer token text.
pub fn bearer(headers: &HeaderMap) -> Result<&str, AuthError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(AuthError::Missing)
}

/// Verifies admin tokens against the mesh CA and the current revocations.
pub struct AdminAuth {
    verifier: CertVerifier,
    mesh_id: String,
    revocations: Mutex<Arc<RevocationList>>,
    cache: Mutex<Cache>,
}

impl AdminAuth {
    /// Trusts tokens whose certificate chains to `verifier`'s CA, for `mesh_id`.
    pub fn new(verifier: CertVerifier, mesh_id: String) -> Self {
        Self {
            verifier,
            mesh_id,
            revocations: Mutex::new(Arc::new(RevocationList::new())),
            cache: Mutex::new(Cache::default()),
        }
    }

    /// The mesh CA's public key (revocations must carry its signature).
    pub fn ca_key(&self) -> &ed25519_dalek::VerifyingKey {
        self.verifier.ca_key()
    }

    /// Replaces the revocation list (the CA's file and the committed mesh state).
    pub fn set_revocations(&self, revocations: Arc<RevocationList>) {
        if let Ok(mut slot) = self.revocations.lock() {
            *slot = revocations;
        }
    }

    /// Checks the request's bearer token for `action`.
    pub fn check(&self, headers: &HeaderMap, action: Action) -> Result<(), AuthError> {
        self.check_token(bearer(headers)?, action)
    }

    /// Checks a token's text for `action` (a token forwarded with a write
    /// from a node without the committee is checked again here).
    pub fn check_token(&self, text: &str, action: Action) -> Result<(), AuthError> {
        let now_unix_s = now_unix_s()?;
        let revocations = match self.revocations.lock() {
            Ok(slot) => slot.clone(),
            Err(_) => Arc::new(RevocationList::new()),
        };
        let key = *blake3::hash(text.as_bytes()).as_bytes();
        if self.cached(&key, now_unix_s, revocations.len(), action) {
            return Ok(());
        }
        let token = AdminToken::decode(text)?;
        let cert = token.verify_for(
            &self.verifier,
            &self.mesh_id,
            now_unix_s,
            &revocations,
            action,
        )?;
        self.remember(key, token.expires_unix_s, cert.info.roles);
        Ok(())
    }

    fn cached(&self, key: &[u8; 32], now_unix_s: i64, revocations: usize, action: Action) -> bool {
        let Ok(mut cache) = self.cache.lock() else {
            return false;
        };
        if cache.revocations_seen != revocations {
            cache.verified.clear();
            cache.revocations_seen = revocations;
            return false;
        }
        match cache.verified.get(key) {
            Some((expires, roles)) if *expires >= now_unix_s => {
                mesh_security::rbac::required_roles(action)
                    .iter()
                    .any(|role| roles.contains(role))
            }
            _ => false,
        }
    }

    fn remember(&self, key: [u8; 32], expires_unix_s: i64, roles: RoleSet) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.verified.len() >= TOKEN_CACHE_ENTRIES_MAX {
                cache.verified.clear();
            }
            cache.verified.insert(key, (expires_unix_s, roles));
        }
    }
}

fn now_unix_s() -> Result<i64, AuthError> {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .map_err(|_| AuthError::Clock)
}
