//! Choosing the accelerator: KVM where it can run Hull's guest kernel, TCG otherwise.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// How QEMU executes guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    /// QEMU's software emulation: works everywhere, several times slower.
    Tcg,
}

impl Accel {
    /// The value of QEMU's `-accel` option.
    pub fn qemu_name(self) -> &'static str {
        match self {
            Self::Kvm => "kvm",
            Self::Tcg => "tcg",
        }
    }

    /// The `-cpu` model that suits the accelerator.
    pub fn cpu_model(self) -> &'static str {
        match self {
            Self::Kvm => "host",
            Self::Tcg => "max",
        }
    }
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.qemu_name())
    }
}

/// What the user asked for: a fixed accelerator or detection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AccelChoice {
    #[default]
    Auto,
    Fixed(Accel),
}

#[derive(Debug, thiserror::Error)]
#[error("unknown accelerator '{0}': use auto, kvm or tcg")]
pub struct UnknownAccel(String);

impl FromStr for AccelChoice {
    type Err = UnknownAccel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" | "" => Ok(Self::Auto),
            "kvm" => Ok(Self::Fixed(Accel::Kvm)),
            "tcg" => Ok(Self::Fixed(Accel::Tcg)),
            other => Err(UnknownAccel(other.to_string())),
        }
    }
}

/// The host facts detection depends on, behind a trait so tests can fake them.
pub trait HostProbe {
    /// `/dev/kvm` can be opened for reading and writing.
    fn kvm_usable(&self) -> bool;
    /// The KVM module is PVM (`/sys/module/kvm_pvm`), which runs only PVM-enabled guests.
    fn kvm_is_pvm(&self) -> bool;
}

/// The real host.
pub struct SystemProbe;

impl HostProbe for SystemProbe {
    fn kvm_usable(&self) -> bool {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/kvm")
            .is_ok()
    }

    fn kvm_is_pvm(&self) -> bool {
        Path::new("/sys/module/kvm_pvm").exists()
    }
}

/// The accelerator chosen and the one line that tells the user why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccelDecision {
    pub accel: Accel,
    pub reason: String,
}

/// Picks the accelerator. `kernel_is_pvm` says whether the configured guest
/// kernel was built for PVM; Hull's own kernel is not.
pub fn decide(choice: AccelChoice, probe: &dyn HostProbe, kernel_is_pvm: bool) -> AccelDecision {
    if let AccelChoice::Fixed(accel) = choice {
        return AccelDecision {
            accel,
            reason: format!("accelerator: {accel} (as configured)"),
        };
    }
    if !probe.kvm_usable() {
        return AccelDecision {
            accel: Accel::Tcg,
            reason:
                "accelerator: tcg, because /dev/kvm is not usable here (software emulation, slower)"
                    .into(),
        };
    }
    if probe.kvm_is_pvm() && !kernel_is_pvm {
        return AccelDecision {
            accel: Accel::Tcg,
            reason: "accelerator: tcg, because this host's KVM is PVM (kvm_pvm), which cannot boot a stock guest kernel (software emulation, slower)".into(),
        };
    }
    AccelDecision {
        accel: Accel::Kvm,
        reason: "accelerator: kvm".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeProbe {
        usable: bool,
        pvm: bool,
    }

    impl HostProbe for FakeProbe {
        fn kvm_usable(&self) -> bool {
            self.usable
        }
        fn kvm_is_pvm(&self) -> bool {
            self.pvm
        }
    }

    fn auto(usable: bool, pvm: bool, kernel_is_pvm: bool) -> Accel {
        decide(AccelChoice::Auto, &FakeProbe { usable, pvm }, kernel_is_pvm).accel
    }

    #[test]
    fn plain_kvm_host_uses_kvm() {
        assert_eq!(auto(true, false, false), Accel::Kvm);
    }

    #[test]
    fn pvm_host_falls_back_to_tcg_for_a_stock_kernel() {
        let decision = decide(
            AccelChoice::Auto,
            &FakeProbe {
                usable: true,
                pvm: true,
            },
            false,
        );
        assert_eq!(decision.accel, Accel::Tcg);
        assert!(decision.reason.contains("PVM"));
    }

    #[test]
    fn pvm_host_uses_kvm_for_a_pvm_kernel() {
        assert_eq!(auto(true, true, true), Accel::Kvm);
    }

    #[test]
    fn no_kvm_means_tcg() {
        assert_eq!(auto(false, false, false), Accel::Tcg);
    }

    #[test]
    fn an_explicit_choice_wins() {
        let probe = FakeProbe {
            usable: false,
            pvm: false,
        };
        let choice: AccelChoice = "kvm".parse().unwrap();
        assert_eq!(decide(choice, &probe, false).accel, Accel::Kvm);
        assert!("xen".parse::<AccelChoice>().is_err());
    }
}
