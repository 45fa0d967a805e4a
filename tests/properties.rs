//! Property tests (proptest, 256 cases each): Fernet tokens made by keyd decrypt with keyd's
//! own code and the key that made them, and with no other; the envfile sink writes exactly the
//! values python-dotenv reads back unchanged; the store model comes back from its JSON form
//! with every field equal. Interoperability with Python's cryptography is in generators.rs.

use base64::Engine as _;
use keyd::material::Material;
use keyd::material::fernet::{self, FernetError, FernetKey};
use keyd::policy::{EnvFileSpec, FilesSpec, Kind, Part, SinkSpec, Sinks};
use keyd::secret::SecretString;
use keyd::sinks::EnvFileSink;
use keyd::store::{
    Digest, Label, OutputRecord, RekeyOwed, ReloadOwed, Rotation, SecretRecord, StackRecord, Stamp,
    Step, StoreData, VersionRecord,
};
use proptest::prelude::*;

fn config() -> ProptestConfig {
    ProptestConfig::with_cases(256)
}

fn key(bytes: &[u8; 32]) -> FernetKey {
    FernetKey::parse(&base64::engine::general_purpose::URL_SAFE.encode(bytes))
        .expect("32 bytes in URL-safe base64 are a Fernet key")
}

/// A string made mostly of characters and pieces that mean something to env-file parsers.
fn env_value() -> impl Strategy<Value = String> {
    let tricky = prop::sample::select(vec![
        "'",
        "\"",
        "\\",
        "\\\\",
        "\\'",
        "$",
        "${BEFORE}",
        "${X:-y}",
        " ",
        " #",
        "#",
        "=",
        "\n",
        "\r",
        "\t",
        "{",
        "}",
        ":-",
        "`",
        "!",
        "\u{7f}",
        "\u{85}",
        "\u{a0}",
        "\u{2028}",
        "é",
        "☃",
    ]);
    let piece = prop_oneof![
        3 => prop::char::range('!', '~').prop_map(String::from),
        2 => tricky.prop_map(String::from),
        1 => any::<char>().prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..16).prop_map(|pieces| pieces.concat())
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_fernet_token_decrypts_with_its_key_and_no_other(
        bytes in any::<[u8; 32]>(),
        other in any::<[u8; 32]>(),
        plaintext in prop::collection::vec(any::<u8>(), 0..300),
        timestamp in any::<u64>(),
    ) {
        let token = key(&bytes).encrypt(&plaintext, timestamp);
        let raw = base64::engine::general_purpose::URL_SAFE.decode(&token).expect("base64");
        prop_assert_eq!(raw[0], 0x80);
        prop_assert_eq!(&raw[1..9], &timestamp.to_be_bytes()[..]);
        // 1 + 8 + 16 header, the plaintext padded to whole 16-byte blocks, a 32-byte tag.
        prop_assert_eq!(raw.len(), 25 + (plaintext.len() / 16 + 1) * 16 + 32);
        prop_assert_eq!(&key(&bytes).decrypt(&token).expect("decrypts")[..], &plaintext[..]);
        if other != bytes {
            prop_assert_eq!(key(&other).decrypt(&token).map(drop), Err(FernetError::InvalidToken));
            let both = [key(&other), key(&bytes)];
            prop_assert_eq!(&fernet::decrypt_with_any(&both, &token).expect("MultiFernet")[..], &plaintext[..]);
        }
    }

    #[test]
    fn a_fernet_token_changed_anywhere_is_refused(
        bytes in any::<[u8; 32]>(),
        plaintext in prop::collection::vec(any::<u8>(), 0..64),
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        let token = key(&bytes).encrypt(&plaintext, 1_700_000_000);
        let mut raw = base64::engine::general_purpose::URL_SAFE.decode(&token).expect("base64");
        let at = at.index(raw.len());
        raw[at] ^= flip;
        let changed = base64::engine::general_purpose::URL_SAFE.encode(&raw);
        prop_assert_eq!(key(&bytes).decrypt(&changed).map(drop), Err(FernetError::InvalidToken));
    }

    #[test]
    fn an_env_value_is_written_only_if_python_dotenv_reads_it_back_unchanged(
        name in "[A-Za-z_][A-Za-z0-9_]{0,12}",
        value in env_value(),
    ) {
        let carried = value.chars().all(EnvFileSpec::carries);
        match EnvFileSink::render_line(&name, &value) {
            Ok(line) => {
                prop_assert!(carried, "{:?} was written as {:?}", value, &*line);
                prop_assert_eq!(keyd::fuzzing::read_back(&line), Ok(Some(value.clone())));
            }
            Err(_) => prop_assert!(!carried, "{:?} was refused", value),
        }
    }

    #[test]
    fn an_env_name_that_is_not_a_variable_name_is_refused(
        name in "[^=]{0,12}",
        value in "[a-z]{0,8}",
    ) {
        let result = EnvFileSink::render_line(&name, &value);
        prop_assert_eq!(result.is_ok(), EnvFileSpec::is_variable_name(&name));
    }

    #[test]
    fn the_store_model_survives_its_json_form(data in store_data()) {
        let json = serde_json::to_vec(&data).expect("the store serialises");
        let back: StoreData = serde_json::from_slice(&json).expect("and reads back");
        prop_assert_eq!(back.format, data.format);
        prop_assert_eq!(back.generation, data.generation);
        prop_assert_eq!(values(&back), values(&data));
        // Debug prints every field but the values (redacted), which are compared above.
        prop_assert_eq!(format!("{back:?}"), format!("{data:?}"));
    }
}

#[test]
fn generated_fernet_keys_are_32_bytes_of_url_safe_base64_and_round_trip() {
    for _ in 0..64 {
        let text = fernet::generate();
        let text = text.expose_secret();
        assert_eq!(text.len(), 44, "{} characters", text.len());
        assert!(text.ends_with('='));
        assert!(
            text.trim_end_matches('=')
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        let raw = base64::engine::general_purpose::URL_SAFE
            .decode(text)
            .expect("URL-safe base64");
        assert_eq!(raw.len(), 32);
        let key = FernetKey::parse(text).expect("a generated key parses");
        assert_eq!(
            &key.decrypt(&key.encrypt(b"x", 0)).expect("decrypts")[..],
            b"x"
        );
    }
}

/// Every secret value in the store, in order, with where it is.
fn values(data: &StoreData) -> Vec<(String, String, u64, String)> {
    let mut out = Vec::new();
    for (stack, record) in &data.stacks {
        for (name, secret) in &record.secrets {
            for version in &secret.versions {
                if let Material::Text { value } = &version.material {
                    out.push((
                        stack.clone(),
                        name.clone(),
                        version.number,
                        value.expose_secret().to_owned(),
                    ));
                }
            }
        }
    }
    out
}

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..12).prop_map(|c| c.into_iter().collect())
}

fn stamp() -> impl Strategy<Value = Stamp> {
    (
        any::<(u64, u64, u64, i64, i64)>(),
        any::<(u32, u32, u32)>(),
        "[0-9a-f]{32}",
        any::<Option<u64>>(),
    )
        .prop_map(
            |((dev, ino, size, mtime_ns, ctime_ns), (mode, uid, gid), digest, shown)| Stamp {
                dev,
                ino,
                size,
                mtime_ns,
                ctime_ns,
                mode,
                uid,
                gid,
                digest: Digest::parse(&digest),
                shown,
            },
        )
}

fn version() -> impl Strategy<Value = VersionRecord> {
    (
        any::<u64>(),
        prop::option::of(prop::sample::select(vec![
            Label::Pending,
            Label::Current,
            Label::Previous,
        ])),
        any::<(i64, Option<i64>, Option<i64>)>(),
        text(),
        prop::option::of(text()),
        text(),
    )
        .prop_map(
            |(number, label, (created, promoted, retired), params, login, value)| VersionRecord {
                number,
                label,
                created,
                promoted,
                retired,
                params,
                login,
                material: Material::Text {
                    value: SecretString::new(value),
                },
            },
        )
}

fn rotation() -> impl Strategy<Value = Rotation> {
    (
        any::<(u64, i64, Option<i64>, u32, Option<i64>)>(),
        prop::sample::select(vec![
            Step::Set,
            Step::Test,
            Step::Deliver,
            Step::Promote,
            Step::Finish,
        ]),
        text(),
        prop::option::of(text()),
    )
        .prop_map(
            |((pending, started, delivered_at, attempts, retry_at), step, by, last_error)| {
                Rotation {
                    pending,
                    step,
                    started,
                    delivered_at,
                    by,
                    attempts,
                    last_error,
                    retry_at,
                }
            },
        )
}

fn secret() -> impl Strategy<Value = SecretRecord> {
    let part = prop::sample::select(vec![
        Part::Main,
        Part::PublicPem,
        Part::Jwks,
        Part::TlsKey,
        Part::Login,
    ]);
    let rekey = any::<(u64, u32, Option<i64>)>();
    (
        prop::sample::select(Kind::ALL.to_vec()),
        prop::collection::vec((text(), part), 0..3),
        prop::option::of(any::<usize>()),
        prop::collection::vec(version(), 0..3),
        prop::option::of(rotation()),
        prop::option::of((rekey, prop::option::of(text()))),
        any::<bool>(),
    )
        .prop_map(
            |(kind, outputs, fernet_list_keep, versions, rotation, rekey, removed)| SecretRecord {
                kind,
                outputs: outputs
                    .into_iter()
                    .map(|(name, part)| OutputRecord { name, part })
                    .collect(),
                fernet_list_keep,
                versions: versions.into(),
                rotation,
                rekey: rekey.map(|((version, attempts, retry_at), last_error)| RekeyOwed {
                    version,
                    attempts,
                    last_error,
                    retry_at,
                }),
                removed,
            },
        )
}

fn stack() -> impl Strategy<Value = StackRecord> {
    (
        text(),
        text(),
        any::<i64>(),
        any::<(bool, bool)>(),
        prop::collection::btree_map(text(), secret(), 0..3),
        prop::collection::btree_map(text(), stamp(), 0..3),
        prop::option::of((any::<u32>(), text(), any::<i64>())),
    )
        .prop_map(
            |(path, policy_source, applied_at, (files, envfile), secrets, ledger, reload)| {
                let mut sinks = Sinks::default();
                if files {
                    sinks.set(SinkSpec::Files(FilesSpec {
                        dir: format!("/run/{path}").into(),
                        mode: 0o400,
                        dir_mode: 0o755,
                        uid: Some(1000),
                        gid: None,
                        reload: None,
                    }));
                }
                if envfile {
                    sinks.set(SinkSpec::EnvFile(EnvFileSpec {
                        path: format!("{path}.env").into(),
                        mode: 0o600,
                        include: Some(vec![path.clone()]),
                    }));
                }
                StackRecord {
                    policy_path: path.into(),
                    policy_source,
                    applied_at,
                    sinks,
                    secrets,
                    ledger: ledger.into_iter().collect(),
                    swarm: Default::default(),
                    reload_owed: reload.map(|(attempts, last_error, retry_at)| ReloadOwed {
                        attempts,
                        last_error,
                        retry_at,
                    }),
                    files_delivered_to: None,
                }
            },
        )
}

fn store_data() -> impl Strategy<Value = StoreData> {
    (
        any::<u32>(),
        any::<u64>(),
        prop::collection::btree_map(text(), stack(), 0..3),
    )
        .prop_map(|(format, generation, stacks)| StoreData {
            format,
            generation,
            stacks,
            recipients: Vec::new(),
            audit_owed: Vec::new(),
            audit_at: 0,
        })
}
