//! Dropping every capability: effective, permitted, inheritable, bounding
//! and ambient, then no_new_privs.
//!
//! The job runs as root of its user namespace, and an exec by root would
//! normally regain every capability of the bounding set; with the bounding
//! set empty and `SECBIT_NOROOT` locked, it gains none.

use rustix::thread::{
    clear_ambient_capability_set, remove_capability_from_bounding_set,
    set_capabilities_secure_bits, set_no_new_privs, CapabilitiesSecureBits, CapabilitySet,
    CapabilitySets,
};

/// Highest capability number the kernel may know (CAP_LAST_CAP is 40 on
/// 6.x; numbers the kernel does not know fail with EINVAL and are skipped).
const MAX_CAP: u32 = 63;

/// Drops every capability of the calling thread for good.
pub(crate) fn drop_all() -> Result<(), String> {
    // Lock root out of capabilities first, while CAP_SETPCAP is still held.
    let bits = CapabilitiesSecureBits::NO_ROOT
        | CapabilitiesSecureBits::NO_ROOT_LOCKED
        | CapabilitiesSecureBits::NO_SETUID_FIXUP
        | CapabilitiesSecureBits::NO_SETUID_FIXUP_LOCKED
        | CapabilitiesSecureBits::NO_CAP_AMBIENT_RAISE
        | CapabilitiesSecureBits::NO_CAP_AMBIENT_RAISE_LOCKED;
    set_capabilities_secure_bits(bits).map_err(|e| format!("set securebits: {e}"))?;
    for n in 0..=MAX_CAP {
        let cap = CapabilitySet::from_bits_retain(1 << n);
        match remove_capability_from_bounding_set(cap) {
            Ok(()) => {}
            // Past the kernel's last capability.
            Err(rustix::io::Errno::INVAL) => break,
            Err(e) => return Err(format!("drop capability {n} from the bounding set: {e}")),
        }
    }
    clear_ambient_capability_set().map_err(|e| format!("clear ambient capabilities: {e}"))?;
    rustix::thread::set_capabilities(
        None,
        CapabilitySets {
            effective: CapabilitySet::empty(),
            permitted: CapabilitySet::empty(),
            inheritable: CapabilitySet::empty(),
        },
    )
    .map_err(|e| format!("clear capability sets: {e}"))?;
    set_no_new_privs(true).map_err(|e| format!("set no_new_privs: {e}"))
}
