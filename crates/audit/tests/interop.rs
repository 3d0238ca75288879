//! The checkpoints verify with an independent implementation: Python's
//! `cryptography` (Ed25519) and `hashlib` (the key id and the RFC 6962
//! root over the entries file), following the signed-note spec.

use std::process::Command;

use audit::{AuditKey, AuditLog};
use serde_json::json;

const SCRIPT: &str = r#"
import base64, hashlib, sys
try:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
except ImportError as e:
    sys.exit("the python3 'cryptography' module is required (apt install python3-cryptography): %s" % e)

note, vkey, entries = sys.argv[1], sys.argv[2], sys.argv[3]
name, keyid, key = vkey.split("+", 2)
key = base64.b64decode(key)
assert key[0] == 1 and len(key) == 33, "not an Ed25519 verifier key"
pub = key[1:]
assert hashlib.sha256(name.encode() + b"\n\x01" + pub).digest()[:4].hex() == keyid, "key id"

text, sigs = note.rsplit("\n\n", 1)
text += "\n"
checked = False
for line in sigs.splitlines():
    assert line.startswith("\u2014 "), "signature line prefix"
    signer, b64 = line[2:].split(" ")
    blob = base64.b64decode(b64)
    if signer == name and blob[:4].hex() == keyid:
        Ed25519PublicKey.from_public_bytes(pub).verify(blob[4:], text.encode())
        checked = True
assert checked, "no signature by the key"

origin, size, root = text.splitlines()[:3]
assert origin == name, "origin"
size = int(size)

def leaf(d): return hashlib.sha256(b"\x00" + d).digest()
def node(l, r): return hashlib.sha256(b"\x01" + l + r).digest()
def mth(hs):
    if len(hs) == 1: return hs[0]
    k = 1
    while k * 2 < len(hs): k *= 2
    return node(mth(hs[:k]), mth(hs[k:]))

lines = open(entries, "rb").read().split(b"\n")[:size]
assert base64.b64decode(root) == mth([leaf(l) for l in lines]), "root"
print("ok")
"#;

fn python(note: &str, vkey: &str, entries: &std::path::Path) -> std::process::Output {
    Command::new("python3")
        .args(["-c", SCRIPT, note, vkey])
        .arg(entries)
        .output()
        .expect("python3 must be installed to run the interop test")
}

#[test]
fn python_cryptography_verifies_checkpoints() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = AuditKey::generate("airlock.audit/interop").expect("key");
    let (log, _) = AuditLog::open(dir.path(), key.clone()).expect("open");
    for i in 0..37 {
        log.append_one(json!({"kind": "interop", "i": i, "text": "ünïcode — \"quoted\"\n"}))
            .expect("append");
    }
    let signed = log.checkpoint().expect("checkpoint");
    let entries = dir.path().join(audit::log::ENTRIES_FILE);
    let out = python(&signed.note, &key.verifier_key(), &entries);
    assert!(
        out.status.success(),
        "python rejected the checkpoint: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    // And it does reject a changed note.
    let tampered = signed.note.replacen("\n37\n", "\n36\n", 1);
    let out = python(&tampered, &key.verifier_key(), &entries);
    assert!(!out.status.success(), "python accepted a tampered note");
}
