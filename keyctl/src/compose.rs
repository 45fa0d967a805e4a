//! `keyctl compose`: the docker-compose service block that runs keyd as a sidecar for a policy
//! (the same shape as examples/compose/docker-compose.yml), and the volumes it needs.

use std::fmt::Write as _;

use keyd::policy::Policy;

/// The block for `policy`, read from `policy_file` (mounted as `./<its file name>`), running
/// `image`; `None` when the policy has no files sink (a sidecar delivers files).
pub fn block(policy: &Policy, image: &str) -> Option<String> {
    let files = policy.sinks.files()?;
    let dir = files.dir.display();
    let policy_name = policy
        .path
        .file_name()
        .map_or("policy.toml".into(), |n| n.to_string_lossy());
    let outputs: Vec<String> = policy.outputs().into_iter().map(|o| o.name).collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# keyd as a sidecar for stack {:?}: put this beside {policy_name} (the compose file\n\
         # mounts it as ./{policy_name}) and merge it into your docker-compose.yml. Every service\n\
         # that reads a secret mounts the volume and waits for keyd:\n\
         #\n\
         #     volumes:\n\
         #       - secrets:{dir}:ro\n\
         #     depends_on:\n\
         #       keyd:\n\
         #         condition: service_healthy\n\
         #\n\
         # and reads {dir}/NAME for NAME in: {}.\n\
         # Works with docker-compose 1.29 and `docker compose` (v2). The keyd image is built by\n\
         # docker/build-image.sh; no value appears in this file.",
        policy.stack,
        outputs.join(", ")
    );
    let _ = write!(
        out,
        "\nservices:\n  keyd:\n    image: {image}\n    command: [\"--apply\", \"/etc/keyd/policy.toml\"]\n    volumes:\n      - ./{policy_name}:/etc/keyd/policy.toml:ro\n      - keyd-home:/var/lib/keyd\n      - secrets:{dir}\n    healthcheck:\n      test: [\"CMD\", \"/bin/keyd\", \"--health\"]\n      interval: 2s\n      timeout: 3s\n      retries: 30\n    restart: unless-stopped\n\nvolumes:\n  # keyd's store (encrypted with age) and its identity (0600).\n  keyd-home: {{}}\n  # The delivered values, in memory only.\n  secrets:\n    driver_opts:\n      type: tmpfs\n      device: tmpfs\n      o: \"size=4m,mode=0755\"\n"
    );
    Some(out)
}
