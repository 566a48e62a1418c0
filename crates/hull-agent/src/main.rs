//! The guest's PID 1: boot the guest, then serve hosts until one asks it to
//! power off (or the agent cannot start).

use std::convert::Infallible;
use std::time::Duration;

use hull_agent::{boot, error_chain, log, port, session};

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
    let Err(e) = run();
    log!("{}; powering off", error_chain(e.as_ref()));
    boot::power_off();
}

/// Serving returns only if the agent cannot start; the end of the control
/// channel is not the end of the VM: a restarted hulld connects again.
fn run() -> Result<Infallible, Box<dyn std::error::Error>> {
    if std::process::id() == 1 {
        boot::init_system()?;
    }
    let port = port::open(hull_proto::CONTROL_PORT_NAME, PORT_WAIT)?;
    Ok(session::serve(port)?)
}
