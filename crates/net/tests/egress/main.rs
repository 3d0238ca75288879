//! Integration tests of the egress proxy and DNS responder, with real
//! servers on loopback only (127.0.0.0/8 and ::1).

mod dns;
mod prop;
mod proxy;
mod robust;
mod support;
