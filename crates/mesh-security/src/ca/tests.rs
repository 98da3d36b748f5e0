//! Certificate tests: every rejection has its own error.
#![allow(clippy::unwrap_used)]

use super::*;
use crate::identity::NodeIdentity;
use crate::rbac::{Action, Role, RoleSet};

const T0: i64 = 1_800_000_000;
const DAY_S: i64 = 86_400;

fn ca() -> MeshCa {
    MeshCa::init(
        NodeIdentity::from_seed(&[100; 32]),
        "test mesh CA",
        T0 - DAY_S,
        T0 + 365 * DAY_S,
        [1; 16],
    )
    .unwrap()
}

fn node() -> NodeIdentity {
    NodeIdentity::from_seed(&[5; 32])
}

fn verifier(ca: &MeshCa) -> CertVerifier {
    CertVerifier::new(ca.cert_der().to_vec(), &ca_pin(ca.cert_der())).unwrap()
}

fn issue(ca: &MeshCa, roles: &[Role]) -> IssuedCert {
    ca.issue(
        &node().verifying_key(),
        RoleSet::of(roles),
        T0,
        T0 + 30 * DAY_S,
        [2; 16],
    )
    .unwrap()
}

#[test]
fn an_issued_certificate_verifies_and_carries_key_and_roles() {
    let ca = ca();
    let cert = issue(&ca, &[Role::Trainer, Role::Observer]);
    assert!(cert.pem.contains("BEGIN CERTIFICATE"));
    let ok = verifier(&ca)
        .verify(
            &cert.der,
            Some(&node().verifying_key()),
            T0 + 1,
            &RevocationList::new(),
        )
        .unwrap();
    assert_eq!(ok.info.node_id, node().node_id());
    assert_eq!(ok.info.roles, RoleSet::of(&[Role::Trainer, Role::Observer]));
    assert_eq!(ok.info.serial, cert.serial);
}

#[test]
fn expired_is_its_own_error() {
    let ca = ca();
    let cert = issue(&ca, &[Role::Trainer]);
    let err = verifier(&ca)
        .verify(&cert.der, None, T0 + 31 * DAY_S, &RevocationList::new())
        .unwrap_err();
    assert!(matches!(err, CertError::Expired { .. }), "{err}");
}

#[test]
fn not_yet_valid_is_its_own_error() {
    let ca = ca();
    let cert = issue(&ca, &[Role::Trainer]);
    let err = verifier(&ca)
        .verify(&cert.der, None, T0 - 1, &RevocationList::new())
        .unwrap_err();
    assert!(matches!(err, CertError::NotYetValid { .. }), "{err}");
}

#[test]
fn another_ca_is_a_wrong_ca_even_with_the_same_name() {
    let ca = ca();
    let other = MeshCa::init(
        NodeIdentity::from_seed(&[101; 32]),
        "test mesh CA",
        T0 - DAY_S,
        T0 + DAY_S,
        [3; 16],
    )
    .unwrap();
    let cert = issue(&other, &[Role::Trainer]);
    let err = verifier(&ca)
        .verify(&cert.der, None, T0 + 1, &RevocationList::new())
        .unwrap_err();
    assert!(matches!(err, CertError::WrongCa(_)), "{err}");
    let renamed = MeshCa::init(
        NodeIdentity::from_seed(&[101; 32]),
        "other",
        T0 - DAY_S,
        T0 + DAY_S,
        [3; 16],
    )
    .unwrap();
    let cert = issue(&renamed, &[Role::Trainer]);
    let err = verifier(&ca)
        .verify(&cert.der, None, T0 + 1, &RevocationList::new())
        .unwrap_err();
    assert!(matches!(err, CertError::WrongCa(_)), "{err}");
}

#[test]
fn a_ca_not_matching_the_pin_is_refused() {
    let ca = ca();
    let err = CertVerifier::new(ca.cert_der().to_vec(), &[0; 32]).unwrap_err();
    assert!(matches!(err, CertError::CaPinMismatch { .. }), "{err}");
}

#[test]
fn revoked_is_its_own_error_and_revocations_must_be_signed_by_the_ca() {
    let ca = ca();
    let cert = issue(&ca, &[Role::Trainer]);
    let entry = RevocationEntry {
        serial: cert.serial.clone(),
        node_id: node().node_id(),
        revoked_at_unix_s: T0,
        reason: "key leaked".into(),
    };
    let signed = SignedRevocation::sign(ca.identity(), entry.clone()).unwrap();
    let mut list = RevocationList::new();
    let v = verifier(&ca);
    list.insert(&signed, v.ca_key()).unwrap();
    let err = v.verify(&cert.der, None, T0 + 1, &list).unwrap_err();
    assert!(
        matches!(err, CertError::Revoked { ref reason, .. } if reason == "key leaked"),
        "{err}"
    );

    let forged = SignedRevocation::sign(&node(), entry).unwrap();
    assert!(matches!(
        list.insert(&forged, v.ca_key()),
        Err(CertError::BadRevocationSignature(_))
    ));
}

#[test]
fn a_certificate_presented_by_another_key_is_a_key_mismatch() {
    let ca = ca();
    let cert = issue(&ca, &[Role::Trainer]);
    let intruder = NodeIdentity::from_seed(&[6; 32]).verifying_key();
    let err = verifier(&ca)
        .verify(&cert.der, Some(&intruder), T0 + 1, &RevocationList::new())
        .unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
}

#[test]
fn a_wrong_role_is_its_own_error() {
    let ca = ca();
    let cert = issue(&ca, &[Role::Observer]);
    let v = verifier(&ca);
    let key = node().verifying_key();
    let err = v
        .verify_for(
            &cert.der,
            &key,
            T0 + 1,
            &RevocationList::new(),
            Action::SubmitUpdate,
        )
        .unwrap_err();
    assert!(matches!(err, CertError::Role(_)), "{err}");
    v.verify_for(
        &cert.der,
        &key,
        T0 + 1,
        &RevocationList::new(),
        Action::ReadStatus,
    )
    .unwrap();
}

#[test]
fn a_tampered_certificate_is_refused() {
    let ca = ca();
    let mut der = issue(&ca, &[Role::Observer]).der;
    // Turn "observer" into "observes": the CA signature no longer matches.
    let at = der.windows(8).position(|w| w == b"observer").unwrap();
    der[at + 7] = b's';
    let err = verifier(&ca)
        .verify(&der, None, T0 + 1, &RevocationList::new())
        .unwrap_err();
    assert!(matches!(err, CertError::WrongCa(_)), "{err}");
}

#[test]
fn renewal_keeps_key_and_roles_with_a_new_period_and_serial() {
    let ca = ca();
    let old = issue(&ca, &[Role::Aggregator]);
    let new = ca
        .renew(&old.der, T0 + 29 * DAY_S, T0 + 60 * DAY_S, [9; 16])
        .unwrap();
    assert_ne!(new.serial, old.serial);
    let ok = verifier(&ca)
        .verify(
            &new.der,
            Some(&node().verifying_key()),
            T0 + 45 * DAY_S,
            &RevocationList::new(),
        )
        .unwrap();
    assert_eq!(ok.info.roles, RoleSet::of(&[Role::Aggregator]));
    let foreign = MeshCa::init(
        NodeIdentity::from_seed(&[102; 32]),
        "x",
        T0,
        T0 + DAY_S,
        [4; 16],
    )
    .unwrap();
    assert!(foreign.renew(&old.der, T0, T0 + DAY_S, [8; 16]).is_err());
}

#[test]
fn a_loaded_ca_must_match_its_key() {
    let ca = ca();
    MeshCa::load(NodeIdentity::from_seed(&[100; 32]), ca.cert_der().to_vec()).unwrap();
    let err = MeshCa::load(NodeIdentity::from_seed(&[1; 32]), ca.cert_der().to_vec()).unwrap_err();
    assert!(matches!(err, CertError::KeyMismatch { .. }), "{err}");
}

#[test]
fn garbage_is_malformed_not_a_panic() {
    let ca = ca();
    for bytes in [&b""[..], &b"\x30\x82\xff\xff"[..], &[0u8; 64][..]] {
        let err = verifier(&ca)
            .verify(bytes, None, T0, &RevocationList::new())
            .unwrap_err();
        assert!(matches!(err, CertError::Malformed(_)), "{err}");
    }
}

#[test]
fn pem_and_revocation_encodings_round_trip() {
    let ca = ca();
    let cert = issue(&ca, &[Role::Trainer]);
    assert_eq!(cert_from_pem(&cert.pem).unwrap(), cert.der);
    assert_eq!(
        cert_from_pem(&cert_to_pem(&cert.der).unwrap()).unwrap(),
        cert.der
    );
    assert!(
        cert_from_pem("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n").is_err()
    );
    let entry = RevocationEntry {
        serial: cert.serial,
        node_id: node().node_id(),
        revoked_at_unix_s: T0,
        reason: "r".repeat(1000),
    };
    let signed = SignedRevocation::sign(ca.identity(), entry).unwrap();
    assert_eq!(signed.entry.reason.len(), revoke::REASON_BYTES_MAX);
    let back = SignedRevocation::from_bytes(&signed.to_bytes().unwrap()).unwrap();
    assert_eq!(back, signed);
    back.verify(&ca.identity().verifying_key()).unwrap();
    assert!(SignedRevocation::from_bytes(&[0xff; 10]).is_err());
}

#[test]
fn certificates_are_refused_outside_the_ca_validity() {
    let ca = ca();
    // Issued for longer than the CA lives: refused once the CA has expired.
    let cert = ca
        .issue(
            &node().verifying_key(),
            RoleSet::of(&[Role::Trainer]),
            T0,
            T0 + 400 * DAY_S,
            [2; 16],
        )
        .unwrap();
    let v = verifier(&ca);
    v.verify(&cert.der, None, T0 + 300 * DAY_S, &RevocationList::new())
        .unwrap();
    let err = v
        .verify(&cert.der, None, T0 + 366 * DAY_S, &RevocationList::new())
        .unwrap_err();
    assert!(matches!(err, CertError::CaOutsideValidity { .. }), "{err}");
}

#[test]
fn host_names_are_carried_kept_on_renewal_and_checked() {
    let ca = ca();
    let hosts = vec!["node-7.mesh".to_string(), "10.0.0.7".to_string()];
    let key = node().verifying_key();
    let roles = RoleSet::of(&[Role::Trainer]);
    let cert = ca
        .issue_for_hosts(&key, roles, (T0, T0 + DAY_S), [3; 16], &hosts)
        .unwrap();
    let info = CertInfo::parse(&cert.der).unwrap();
    for host in LOOPBACK_HOSTS
        .iter()
        .copied()
        .chain(["node-7.mesh", "10.0.0.7"])
    {
        assert!(info.hosts.iter().any(|h| h == host), "{host}");
    }
    let renewed = ca.renew(&cert.der, T0, T0 + 2 * DAY_S, [4; 16]).unwrap();
    assert_eq!(CertInfo::parse(&renewed.der).unwrap().hosts, info.hosts);
    for bad in ["", "a b", "x/y", "ünïcode"] {
        let result = ca.issue_for_hosts(&key, roles, (T0, T0 + DAY_S), [5; 16], &[bad.into()]);
        assert!(matches!(result, Err(CertError::Build(_))), "{bad:?}");
    }
}

#[test]
fn roles_are_read_from_the_subject_and_from_the_extension_of_older_certificates() {
    let ca = ca();
    let roles = RoleSet::of(&[Role::Committee, Role::Trainer]);
    let cert = issue(&ca, &[Role::Committee, Role::Trainer]);
    let parsed = x509_parser::parse_x509_certificate(&cert.der).unwrap().1;
    let has_extension = parsed
        .iter_extensions()
        .any(|e| e.oid.to_id_string() == ROLES_OID_STR);
    assert!(!has_extension, "new certificates carry no 2.25 extension");
    let older = ca
        .issue_with_roles_extension(&node().verifying_key(), roles, (T0, T0 + DAY_S))
        .unwrap();
    let ok = verifier(&ca)
        .verify(
            &older,
            Some(&node().verifying_key()),
            T0 + 1,
            &RevocationList::new(),
        )
        .unwrap();
    assert_eq!(ok.info.roles, roles);
    assert_eq!(CertInfo::parse(&cert.der).unwrap().roles, roles);
}
