//! `keyctl compose`: the docker-compose service block that runs keyd as a sidecar for a policy
//! (the same shape as examples/compose/docker-compose.yml), and the volumes it needs.
//!
//! Every value taken from the policy or the command line is written as a double-quoted YAML
//! scalar with control characters escaped, so no path or name can add a key; those taken from
//! the policy also have compose's `$` doubled, so none names a variable. The image is the
//! operator's own argument and is left to compose's interpolation (`${KEYD_IMAGE:-keyd:local}`).

use std::fmt::Write as _;

use keyd::policy::Policy;

/// The uid and gid the sidecar runs as. docker/build-image.sh gives the image's
/// `/var/lib/keyd` and `/run/secrets` to them, and a named volume takes its mount point's owner
/// from the image when it is first used, so keyd can write to both without root.
const SIDECAR_ID: u32 = 65532;

/// The block for `policy`, read from `policy_file` (mounted as `./<its file name>`), running
/// `image`; `None` when the policy has no files sink (a sidecar delivers files).
pub fn block(policy: &Policy, image: &str) -> Option<String> {
    let files = policy.sinks.files()?;
    let dir = files.dir.to_string_lossy();
    let policy_name = policy
        .path
        .file_name()
        .map_or("policy.toml".into(), |n| n.to_string_lossy());
    let outputs: Vec<String> = policy.outputs().into_iter().map(|o| o.name).collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# keyd as a sidecar for stack {stack}. Put this beside the policy, {name}, which it\n\
         # mounts (the policy holds no value; keyd runs as uid {SIDECAR_ID}, so others must be\n\
         # able to read it), and merge it into your docker-compose.yml. Every service that reads\n\
         # a secret mounts the volume and waits for keyd:\n\
         #\n\
         #     volumes:\n\
         #       - type: volume\n\
         #         source: secrets\n\
         #         target: {target}\n\
         #         read_only: true\n\
         #     depends_on:\n\
         #       keyd:\n\
         #         condition: service_healthy\n\
         #\n\
         # and reads the file NAME in that directory for NAME in: {}.\n\
         # Works with docker-compose 1.29 and `docker compose` (v2). The keyd image is built by\n\
         # docker/build-image.sh; no value appears in this file.\n\
         #\n\
         # `docker-compose down -v` (`docker compose down --volumes`) deletes the keyd-home\n\
         # volume: the identity and the store, and every value with them (the next `up` makes\n\
         # new ones). Back both up first, and keep the identity offline:\n\
         #\n\
         #     docker-compose exec keyd keyctl backup --out /var/lib/keyd/backup.age\n\
         #     docker cp \"$(docker-compose ps -q keyd)\":/var/lib/keyd/backup.age ./keyd-backup.age\n\
         #     docker cp \"$(docker-compose ps -q keyd)\":/var/lib/keyd/identity.txt ./keyd-identity.txt",
        outputs.join(", "),
        stack = quoted(&policy.stack),
        name = quoted(&policy_name),
        target = literal(&dir),
    );
    let _ = write!(
        out,
        "\nservices:\n  keyd:\n    image: {image}\n    command: [\"--apply\", \"/etc/keyd/policy.toml\"]\n{privileges}    volumes:\n      - type: bind\n        source: {source}\n        target: /etc/keyd/policy.toml\n        read_only: true\n      - type: volume\n        source: keyd-home\n        target: /var/lib/keyd\n      - type: volume\n        source: secrets\n        target: {target}\n    healthcheck:\n      test: [\"CMD\", \"/bin/keyd\", \"--health\"]\n      interval: 2s\n      timeout: 3s\n      retries: 30\n    restart: unless-stopped\n\nvolumes:\n  # keyd's store (encrypted with age) and its identity (0600). `down -v` deletes them, and\n  # every value with them: `keyctl backup` first (see the comment above, or docs/compose.md).\n  keyd-home: {{}}\n  # The delivered values, in memory only, in a directory keyd's user owns.\n  secrets:\n    driver_opts:\n      type: tmpfs\n      device: tmpfs\n      o: \"size=4m,mode=0755,uid={SIDECAR_ID},gid={SIDECAR_ID}\"\n",
        image = quoted(image),
        privileges = privileges(files.uid, files.gid),
        source = literal(&format!("./{policy_name}")),
        target = literal(&dir),
    );
    Some(out)
}

/// The user, capabilities and restrictions of the keyd service: no root and no capability,
/// unless the files sink gives the files to another uid or gid. That takes CAP_CHOWN, and
/// replacing files someone else owns DAC_OVERRIDE and FOWNER; Docker gives a non-root user
/// no effective capability, so those need root.
fn privileges(uid: Option<u32>, gid: Option<u32>) -> String {
    let other = |id: Option<u32>| id.is_some_and(|id| id != SIDECAR_ID);
    let restricted = "    cap_drop: [ALL]\n    security_opt: [\"no-new-privileges:true\"]\n    read_only: true\n";
    if other(uid) || other(gid) {
        let owner = match (uid, gid) {
            (Some(u), Some(g)) => format!("uid {u} and gid {g}"),
            (Some(u), None) => format!("uid {u}"),
            (None, Some(g)) => format!("gid {g}"),
            (None, None) => String::new(),
        };
        format!(
            "    # Root, for one reason: the policy gives the files to {owner}, which takes\n    # CAP_CHOWN, and Docker gives a user other than root no capability. Only what chown\n    # and replacing the files need is added back; the root filesystem is read-only.\n    user: \"0:0\"\n{restricted}    cap_add: [CHOWN, DAC_OVERRIDE, FOWNER]\n"
        )
    } else {
        format!(
            "    # Not root, no capability, no way to gain one, and a read-only root filesystem:\n    # keyd writes only to its two volumes, which belong to this user.\n    user: \"{SIDECAR_ID}:{SIDECAR_ID}\"\n{restricted}"
        )
    }
}

/// `text` as a YAML scalar that compose reads back as `text`: `$` doubled (compose's way of
/// writing a `$` that starts no variable), then [`quoted`].
fn literal(text: &str) -> String {
    quoted(&text.replace('$', "$$"))
}

/// `text` as a double-quoted YAML scalar: `"` and `\` escaped, and every character YAML could
/// take as a line break, and every other one that is not printable, written as `\uXXXX`.
fn quoted(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            // Control characters (C0, DEL, C1 with NEL) and Unicode's line and paragraph
            // separators and BOM are all below U+10000: four hex digits hold them.
            ch if ch.is_control() || matches!(ch, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                let _ = write!(out, "\\u{:04x}", u32::from(ch));
            }
            ch => out.push(ch),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_block_warns_that_down_v_deletes_the_home_and_says_how_to_back_it_up() {
        let dir = std::env::temp_dir().join(format!("keyctl-compose-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("policy.toml");
        std::fs::write(
            &path,
            "[stack]\nname = \"s\"\n[sinks.files]\ndir = \"/run/secrets\"\n[secrets.A]\nkind = \"token\"\n",
        )
        .unwrap();
        let policy = Policy::load(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let block = block(&policy, "keyd:local").unwrap();
        let (comment, volumes) = block.split_at(block.find("\nservices:").unwrap());
        assert!(comment.contains("`docker-compose down -v`"), "{comment}");
        assert!(
            comment.contains("keyctl backup --out /var/lib/keyd/backup.age")
                && comment.contains("/var/lib/keyd/identity.txt"),
            "{comment}"
        );
        assert!(volumes.contains("`down -v` deletes them"), "{volumes}");
    }

    #[test]
    fn scalars_are_quoted_escaped_and_keep_compose_from_interpolating() {
        assert_eq!(quoted("/run/secrets"), "\"/run/secrets\"");
        assert_eq!(
            quoted("a\"b\\c\nd\u{85}e\u{2028}f"),
            "\"a\\\"b\\\\c\\u000ad\\u0085e\\u2028f\""
        );
        assert_eq!(literal("/x/$HOME/${A}$$"), "\"/x/$$HOME/$${A}$$$$\"");
    }
}
