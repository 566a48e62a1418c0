//! The guest's PID 1: boot the guest, serve the host, power off.

use std::time::Duration;

use hull_agent::{agent, boot, error_chain, log, port};

/// The port appears when the virtio-serial device is probed, which may
/// finish just after init starts.
const PORT_WAIT: Duration = Duration::from_secs(10);

fn main() {
    // Before any thread exists, so that every thread inherits the mask.
    if let Err(e) = boot::block_sigchld() {
        log!("{}", error_chain(&e));
    }
    boot::install_panic_hook();
    log!(
        "hull-agent {} starting ({:?} after boot)",
        env!("CARGO_PKG_VERSION"),
        boot::since_boot()
    );
    if let Err(e) = run() {
        log!("{}", error_chain(e.as_ref()));
    }
    boot::power_off();
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    if std::process::id() == 1 {
        boot::init_system()?;
    }
    let port = port::open(hull_proto::CONTROL_PORT_NAME, PORT_WAIT)?;
    agent::serve(port)?;
    log!("the host closed the control channel; powering off");
    Ok(())
}
