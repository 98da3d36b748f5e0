//! Known-answer tests through the exact crates and call paths this crate
//! uses, so that a wiring mistake (wrong key order, nonce layout, encoding)
//! cannot go unnoticed: RFC 8032 Ed25519 tests 1-3, RFC 7748 X25519, RFC 8439
//! ChaCha20-Poly1305.
#![allow(clippy::unwrap_used)]

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use mesh_security::identity::verify_signature;
use mesh_security::NodeIdentity;
use x25519_dalek::{PublicKey, StaticSecret};

fn hex32(s: &str) -> [u8; 32] {
    hex::decode(s).unwrap().try_into().unwrap()
}

/// RFC 8032 section 7.1, TEST 1-3: (secret key, public key, message, signature).
const RFC8032: [(&str, &str, &str, &str); 3] = [
    (
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
];

#[test]
fn rfc8032_ed25519_tests_1_to_3_through_node_identity() {
    for (secret, public, message, signature) in RFC8032 {
        let id = NodeIdentity::from_seed(&hex32(secret));
        assert_eq!(hex::encode(id.verifying_key().to_bytes()), public);
        let message = hex::decode(message).unwrap();
        let sig = id.sign(&message);
        assert_eq!(hex::encode(sig.to_bytes()), signature);
        verify_signature(&id.verifying_key(), &message, &sig).unwrap();
        // The node id is the libp2p peer id of that same public key.
        assert_eq!(id.node_id().as_bytes(), &hex32(public));
    }
}

#[test]
fn rfc7748_x25519_scalar_multiplication() {
    // Section 5.2, first vector.
    let scalar = StaticSecret::from(hex32(
        "a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4",
    ));
    let u = PublicKey::from(hex32(
        "e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c",
    ));
    assert_eq!(
        hex::encode(scalar.diffie_hellman(&u).as_bytes()),
        "c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552"
    );
}

#[test]
fn rfc7748_x25519_diffie_hellman() {
    // Section 6.1.
    let alice = StaticSecret::from(hex32(
        "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a",
    ));
    let bob = StaticSecret::from(hex32(
        "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb",
    ));
    let alice_public = PublicKey::from(&alice);
    let bob_public = PublicKey::from(&bob);
    assert_eq!(
        hex::encode(alice_public.as_bytes()),
        "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a"
    );
    assert_eq!(
        hex::encode(bob_public.as_bytes()),
        "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f"
    );
    let shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";
    assert_eq!(
        hex::encode(alice.diffie_hellman(&bob_public).as_bytes()),
        shared
    );
    assert_eq!(
        hex::encode(bob.diffie_hellman(&alice_public).as_bytes()),
        shared
    );
}

#[test]
fn rfc8439_chacha20_poly1305_aead() {
    // Section 2.8.2.
    let key = hex32("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f");
    let nonce: [u8; 12] = hex::decode("070000004041424344454647")
        .unwrap()
        .try_into()
        .unwrap();
    let aad = hex::decode("50515253c0c1c2c3c4c5c6c7").unwrap();
    let plaintext = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
    let expected = concat!(
        "d31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d6",
        "3dbea45e8ca9671282fafb69da92728b1a71de0a9e060b2905d6a5b67ecd3b36",
        "92ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc",
        "3ff4def08e4b7a9de576d26586cec64b6116",
        "1ae10b594f09e26a7e902ecbd0600691",
    );
    let cipher = ChaCha20Poly1305::new(&key.into());
    let sealed = cipher
        .encrypt(
            &nonce.into(),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .unwrap();
    assert_eq!(hex::encode(&sealed), expected);
    let opened = cipher
        .decrypt(
            &nonce.into(),
            Payload {
                msg: &sealed,
                aad: &aad,
            },
        )
        .unwrap();
    assert_eq!(opened, plaintext);
    let mut tampered = sealed;
    tampered[0] ^= 1;
    assert!(cipher
        .decrypt(
            &nonce.into(),
            Payload {
                msg: &tampered,
                aad: &aad
            }
        )
        .is_err());
}
