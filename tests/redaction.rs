//! Every public type that holds key material formats with `{:?}` without a byte of it.

use keyd::material::{Material, fernet, password, rsa, tls, token};
use keyd::policy::Policy;
use keyd::secret::Value;
use keyd::sinks::Delivery;
use keyd::store::StoreData;
use keyd_tests::{TempDir, keyctl, ok, workspace};

#[test]
fn debug_output_of_secret_holding_types_carries_no_secret_bytes() {
    let pw = password::generate(24, &password::Alphabet::Alphanumeric);
    let tok = token::generate(32, token::Encoding::Hex);
    let fkey = fernet::generate();
    let pair = rsa::generate(2048).unwrap();
    let cert = tls::generate(&tls::TlsSpec {
        cn: "x".into(),
        sans: vec!["x".into()],
        days: 1,
        key_type: tls::KeyType::EcdsaP256,
    })
    .unwrap();
    let parsed = fernet::FernetKey::parse(fkey.expose_secret()).unwrap();
    let debug = [
        format!("{pw:?}"),
        format!("{tok:?}"),
        format!("{fkey:?}"),
        format!("{parsed:?}"),
        format!("{pair:?}"),
        format!("{cert:?}"),
        format!(
            "{:?}",
            Material::Text {
                value: pw.duplicate()
            }
        ),
        format!("{:?}", Material::Rsa(pair.duplicate())),
        format!("{:?}", Material::Tls(cert.duplicate())),
        format!("{:?}", Value::Secret(tok.duplicate())),
        format!(
            "{:?}",
            Delivery {
                secret: "K".into(),
                name: "K".into(),
                version: 1,
                value: Value::Secret(fkey.duplicate()),
            }
        ),
    ]
    .join("\n");
    let key_body = |pem: &str| pem.lines().nth(1).unwrap().to_owned();
    for secret in [
        pw.expose_secret().to_owned(),
        tok.expose_secret().to_owned(),
        fkey.expose_secret().to_owned(),
        key_body(pair.private_pem.expose_secret()),
        key_body(cert.key_pem.expose_secret()),
    ] {
        assert!(
            !debug.contains(&secret),
            "a secret appears in Debug output:\n{debug}"
        );
    }
    assert!(debug.contains("redacted"));
}

#[test]
fn debug_output_of_a_whole_loaded_store_carries_no_secret_bytes() {
    let tmp = TempDir::new("redaction-store");
    let (home, out) = (tmp.join("home"), tmp.join("out"));
    let policy_path = workspace().join("policies/flowkit.toml");
    ok(keyctl(&home)
        .arg("quickstart")
        .arg("--policy")
        .arg(&policy_path)
        .arg("--out")
        .arg(&out));
    let store = keyd::store::Home::new(&home);
    let data: StoreData = store.lock_shared().unwrap().load().unwrap();
    let debug = format!("{data:?}");
    let policy = Policy::load(&policy_path).unwrap();
    for spec in policy.secrets.iter().filter(|s| s.kind.kind().is_random()) {
        let value = std::fs::read_to_string(out.join(&spec.name)).unwrap();
        let needle = value.lines().find(|l| !l.starts_with("-----")).unwrap();
        assert!(
            !debug.contains(needle),
            "{} appears in the store's Debug output",
            spec.name
        );
    }
}
