//! `keyctl compose` read back the way docker-compose reads it: the block parsed by Python's
//! YAML parser (an implementation independent of keyd), then compose's variable interpolation
//! applied to every string but the image, refusing a `$` that compose would expand.

use std::path::Path;
use std::process::Command;

/// Parses the YAML in `sys.argv[1]`; every string value except the one under `image` goes
/// through compose's interpolation rule (`$$` is a literal `$`, any other `$` starts a
/// variable, which a block made from a policy must never contain). Prints the result as JSON.
const READ_AS_COMPOSE: &str = r#"
import json, sys, yaml
doc = yaml.safe_load(open(sys.argv[1], encoding="utf-8"))
def interpolate(value, key):
    if isinstance(value, dict):
        return {k: interpolate(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, key) for v in value]
    if isinstance(value, str) and key != "image":
        if "$" in value.replace("$$", ""):
            sys.exit("compose would interpolate a variable in %r (under %r)" % (value, key))
        return value.replace("$$", "$")
    return value
print(json.dumps(interpolate(doc, None)))
"#;

/// `keyctl compose --image IMAGE --policy POLICY`'s block as docker-compose would read it (see
/// [`READ_AS_COMPOSE`]), written to `scratch` on the way.
///
/// # Panics
/// When keyctl fails, or the block is not YAML, or compose would expand a variable in it.
pub fn compose_block_as_read(policy: &Path, image: &str, scratch: &Path) -> serde_json::Value {
    let block = crate::ok(
        Command::new(crate::binary("keyctl"))
            .args(["compose", "--image", image, "--policy"])
            .arg(policy),
    );
    let file = scratch.join("compose-block.yml");
    std::fs::write(&file, &block).unwrap();
    let out = crate::run(
        Command::new("python3")
            .arg("-c")
            .arg(READ_AS_COMPOSE)
            .arg(&file),
    );
    assert!(
        out.status.success(),
        "the block does not read as compose (python3-yaml is needed):\n{}\n--- block:\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&block)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
