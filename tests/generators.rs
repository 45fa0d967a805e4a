//! Every generator, checked through the real `keyctl gen` binary against independent
//! implementations: the `openssl` command for RSA keys and certificates, Python's
//! `cryptography` for JWK signatures and Fernet tokens in both directions.

use std::process::Command;

use keyd::material::fernet::FernetKey;
use keyd_tests::{TempDir, keyctl, ok, pipe, python, run};

fn gen_cmd(dir: &TempDir) -> Command {
    let mut cmd = keyctl(&dir.join("unused-home"));
    cmd.current_dir(dir.path()).arg("gen");
    cmd
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}

#[test]
fn gen_touches_no_store() {
    let dir = TempDir::new("gen-nostore");
    ok(gen_cmd(&dir).arg("fernet"));
    assert!(!dir.join("unused-home").exists());
}

#[test]
fn passwords_have_the_length_and_alphabet_asked_for() {
    let dir = TempDir::new("gen-pw");
    type Allowed = fn(char) -> bool;
    let cases: [(&str, &str, Allowed); 4] = [
        ("alphanumeric", "24", |c| c.is_ascii_alphanumeric()),
        ("hex", "40", |c| {
            c.is_ascii_hexdigit() && !c.is_ascii_uppercase()
        }),
        ("ascii-printable", "64", |c| c.is_ascii_graphic()),
        ("abcXYZ-", "30", |c| "abcXYZ-".contains(c)),
    ];
    for (alphabet, length, allowed) in cases {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20 {
            let out = text(ok(gen_cmd(&dir).args([
                "password",
                "--length",
                length,
                "--alphabet",
                alphabet,
            ])));
            let pw = out.strip_suffix('\n').expect("one line");
            assert_eq!(pw.len(), length.parse::<usize>().unwrap(), "{alphabet}");
            assert!(
                pw.chars().all(allowed),
                "{alphabet}: {pw:?} has a character outside the alphabet"
            );
            assert!(seen.insert(pw.to_owned()), "a password repeated");
        }
    }
    let bad = run(gen_cmd(&dir).args(["password", "--alphabet", "alphanumerc"]));
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("repeats"));
}

#[test]
fn tokens_decode_to_the_number_of_bytes_asked_for() {
    let dir = TempDir::new("gen-token");
    for (encoding, decode) in [
        ("hex", "bytes.fromhex(s)"),
        ("base64", "base64.b64decode(s, validate=True)"),
        ("base64url", "base64.urlsafe_b64decode(s)"),
    ] {
        let token = text(ok(gen_cmd(&dir).args([
            "token",
            "--bytes",
            "48",
            "--encoding",
            encoding,
        ])));
        let n = python(
            &format!("import base64, sys\ns = sys.argv[1].strip()\nprint(len({decode}))"),
            &[&token],
        );
        assert_eq!(n.trim(), "48", "{encoding}");
    }
}

#[test]
fn rsa_pair_checks_out_with_openssl_and_signs_jwts_that_verify_with_pem_and_jwk() {
    let dir = TempDir::new("gen-rsa");
    let private = ok(gen_cmd(&dir).args([
        "rsa",
        "--bits",
        "4096",
        "--public-out",
        "pub.pem",
        "--jwk-out",
        "jwk.json",
    ]));
    std::fs::write(dir.join("priv.pem"), &private).unwrap();
    assert!(
        private.starts_with(b"-----BEGIN PRIVATE KEY-----\n"),
        "PKCS#8 PEM"
    );

    // The key is a valid RSA key, 4096 bits, and the public key is its public half.
    let check = text(ok(Command::new("openssl")
        .args(["pkey", "-in", "priv.pem", "-check", "-noout"])
        .current_dir(dir.path())));
    assert!(check.contains("Key is valid"), "{check}");
    let info = text(ok(Command::new("openssl")
        .args(["pkey", "-in", "priv.pem", "-noout", "-text"])
        .current_dir(dir.path())));
    assert!(info.contains("4096 bit"), "{info}");
    let derived_pub = ok(Command::new("openssl")
        .args(["pkey", "-in", "priv.pem", "-pubout"])
        .current_dir(dir.path()));
    assert_eq!(derived_pub, std::fs::read(dir.join("pub.pem")).unwrap());

    // A JWT signed by openssl with the private key verifies with the public PEM (openssl) …
    let jwk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("jwk.json")).unwrap()).unwrap();
    let b64 = |s: &str| {
        python("import base64,sys; print(base64.urlsafe_b64encode(sys.argv[1].encode()).decode().rstrip('='))", &[s]).trim().to_owned()
    };
    let header = b64(&format!(
        r#"{{"alg":"RS256","typ":"JWT","kid":"{}"}}"#,
        jwk["kid"].as_str().unwrap()
    ));
    let payload = b64(r#"{"sub":"flowapi","aud":"flowapi_server"}"#);
    let signing_input = format!("{header}.{payload}");
    let signature = pipe(
        "openssl",
        &[
            "dgst",
            "-sha256",
            "-sign",
            dir.join("priv.pem").to_str().unwrap(),
        ],
        signing_input.as_bytes(),
    );
    std::fs::write(dir.join("sig"), &signature).unwrap();
    let verified = pipe(
        "openssl",
        &[
            "dgst",
            "-sha256",
            "-verify",
            dir.join("pub.pem").to_str().unwrap(),
            "-signature",
            dir.join("sig").to_str().unwrap(),
        ],
        signing_input.as_bytes(),
    );
    assert_eq!(text(verified).trim(), "Verified OK");

    // … and with the JWK alone (Python's cryptography), whose kid is the RFC 7638 thumbprint.
    let sig_b64 = python(
        "import base64,sys; print(base64.urlsafe_b64encode(open(sys.argv[1],'rb').read()).decode().rstrip('='))",
        &[dir.join("sig").to_str().unwrap()],
    );
    let jwt = format!("{signing_input}.{}", sig_b64.trim());
    let result = python(
        r#"
import base64, hashlib, json, sys
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
jwk = json.load(open(sys.argv[1]))
def b64d(s): return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))
assert jwk["kty"] == "RSA" and jwk["alg"] == "RS256" and jwk["use"] == "sig"
n = int.from_bytes(b64d(jwk["n"]), "big"); e = int.from_bytes(b64d(jwk["e"]), "big")
key = rsa.RSAPublicNumbers(e, n).public_key()
head, body, sig = sys.argv[2].split(".")
key.verify(b64d(sig), f"{head}.{body}".encode(), padding.PKCS1v15(), hashes.SHA256())
canonical = json.dumps({"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}, separators=(",", ":"), sort_keys=True)
thumb = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).decode().rstrip("=")
assert thumb == jwk["kid"], (thumb, jwk["kid"])
assert json.loads(b64d(head))["kid"] == jwk["kid"]
print("ok", key.key_size)
"#,
        &[dir.join("jwk.json").to_str().unwrap(), &jwt],
    );
    assert_eq!(result.trim(), "ok 4096");

    // The same signature over a forged payload does not verify with the JWK.
    let forged = format!("{header}.{}.{}", b64(r#"{"sub":"admin"}"#), sig_b64.trim());
    let out = run(Command::new("python3").arg("-c").arg(
        "import base64,json,sys\nfrom cryptography.hazmat.primitives import hashes\nfrom cryptography.hazmat.primitives.asymmetric import padding, rsa\njwk=json.load(open(sys.argv[1]))\nb=lambda s: base64.urlsafe_b64decode(s+'='*(-len(s)%4))\nk=rsa.RSAPublicNumbers(int.from_bytes(b(jwk['e']),'big'),int.from_bytes(b(jwk['n']),'big')).public_key()\nh,p,s=sys.argv[2].split('.')\nk.verify(b(s),(h+'.'+p).encode(),padding.PKCS1v15(),hashes.SHA256())",
    ).arg(dir.join("jwk.json")).arg(&forged));
    assert!(!out.status.success(), "a forged payload must not verify");
}

#[test]
fn rsa_refuses_sizes_other_than_2048_3072_4096() {
    let dir = TempDir::new("gen-rsa-bad");
    let out = run(gen_cmd(&dir).args(["rsa", "--bits", "1024"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected 2048, 3072 or 4096"));
}

#[test]
fn certificate_parses_with_openssl_carries_the_sans_and_matches_its_key() {
    let dir = TempDir::new("gen-tls");
    for (key_type, expect) in [("ecdsa-p256", "256 bit"), ("rsa", "2048 bit")] {
        let key_file = format!("key-{key_type}.pem");
        let cert = ok(gen_cmd(&dir).args([
            "tls",
            "--cn",
            "flow.api",
            "--san",
            "localhost",
            "--san",
            "flow.api",
            "--san",
            "127.0.0.1",
            "--days",
            "30",
            "--key-type",
            key_type,
            "--bits",
            "2048",
            "--key-out",
            &key_file,
        ]));
        let cert_file = dir.join(format!("cert-{key_type}.pem"));
        std::fs::write(&cert_file, &cert).unwrap();
        let x509 = |args: &[&str]| {
            text(ok(Command::new("openssl")
                .arg("x509")
                .arg("-in")
                .arg(&cert_file)
                .args(args)))
        };
        let info = x509(&["-noout", "-text"]);
        assert!(
            info.contains("DNS:localhost, DNS:flow.api, IP Address:127.0.0.1"),
            "{info}"
        );
        assert!(
            info.contains("Subject: CN = flow.api") || info.contains("Subject: CN=flow.api"),
            "{info}"
        );
        assert!(info.contains(expect), "{key_type}: {info}");
        // Valid now, expired within 31 days.
        ok(Command::new("openssl")
            .arg("x509")
            .arg("-in")
            .arg(&cert_file)
            .args(["-noout", "-checkend", "0"]));
        let later = run(Command::new("openssl")
            .arg("x509")
            .arg("-in")
            .arg(&cert_file)
            .args(["-noout", "-checkend", &(31 * 86_400).to_string()]));
        assert!(
            !later.status.success(),
            "the certificate must expire after 30 days"
        );
        // The key file is the certificate's key, and private (0600).
        let cert_pub = x509(&["-noout", "-pubkey"]);
        let key_pub = text(ok(Command::new("openssl")
            .args(["pkey", "-pubout", "-in"])
            .arg(dir.join(&key_file))));
        assert_eq!(cert_pub, key_pub);
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(dir.join(&key_file))
                .unwrap()
                .permissions()
                .mode()
                & 0o777,
            0o600
        );
    }
    // gen never overwrites.
    let again = run(gen_cmd(&dir).args(["tls", "--cn", "x", "--key-out", "key-rsa.pem"]));
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("never overwrites"));
}

const PY_FERNET: &str = r#"
import sys
from cryptography.fernet import Fernet, MultiFernet, InvalidToken
cmd = sys.argv[1]
if cmd == "encrypt":
    print(Fernet(sys.argv[2].encode()).encrypt(sys.argv[3].encode()).decode())
elif cmd == "decrypt":
    print(Fernet(sys.argv[2].encode()).decrypt(sys.argv[3].encode()).decode())
elif cmd == "multi-decrypt":
    keys = [Fernet(k.encode()) for k in sys.argv[2].split(",")]
    print(MultiFernet(keys).decrypt(sys.argv[3].encode()).decode())
"#;

#[test]
fn fernet_keys_interoperate_with_pythons_cryptography_both_ways() {
    let dir = TempDir::new("gen-fernet");
    let key_text = text(ok(gen_cmd(&dir).arg("fernet")));
    let key_text = key_text.trim_end();
    assert_eq!(key_text.len(), 44);
    let key = FernetKey::parse(key_text).unwrap();

    // Python encrypts with the key keyd made; keyd decrypts.
    let token = python(
        PY_FERNET,
        &["encrypt", key_text, "airflow connection secret"],
    );
    assert_eq!(
        &key.decrypt(token.trim()).unwrap()[..],
        b"airflow connection secret"
    );

    // keyd encrypts; Python decrypts.
    let ours = key.encrypt(b"made by keyd", 1_790_000_000);
    assert_eq!(
        python(PY_FERNET, &["decrypt", key_text, &ours]).trim(),
        "made by keyd"
    );

    // A list new,old (MultiFernet): tokens from the old key open; keyd's tokens from the new too.
    let new_text = text(ok(gen_cmd(&dir).arg("fernet")));
    let new_text = new_text.trim_end();
    let list = format!("{new_text},{key_text}");
    assert_eq!(
        python(PY_FERNET, &["multi-decrypt", &list, token.trim()]).trim(),
        "airflow connection secret"
    );
    let from_new = FernetKey::parse(new_text)
        .unwrap()
        .encrypt(b"new", 1_790_000_000);
    assert_eq!(
        python(PY_FERNET, &["multi-decrypt", &list, &from_new]).trim(),
        "new"
    );
    // A token from a key outside the list does not open.
    let out = run(Command::new("python3").arg("-c").arg(PY_FERNET).args([
        "multi-decrypt",
        new_text,
        token.trim(),
    ]));
    assert!(!out.status.success());
}
