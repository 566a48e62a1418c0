//! QEMU's command line for one VM: the microvm machine, its devices and
//! their backends.

use std::os::fd::RawFd;

use crate::accel::Accel;
use crate::{NetBackend, VmConfig};

use super::Qemu;

impl Qemu {
    /// The value of `-accel`.
    fn accel_arg(&self) -> String {
        match (self.accel, self.tcg_tb_size_mib) {
            (Accel::Tcg, Some(mib)) => format!("tcg,tb-size={mib}"),
            (accel, _) => accel.qemu_name().to_string(),
        }
    }

    /// The guest kernel's command line.
    fn kernel_cmdline(&self) -> String {
        // Without ACPI there is no poweroff: the agent reboots instead, which a
        // triple fault (`reboot=t`) turns into a QEMU exit under `-no-reboot`.
        // The console is the one 8250 port microvm has: probing the three
        // legacy ports it lacks is boot time for nothing. `no_timer_check`
        // skips the test of the IO-APIC timer route, which is known good on
        // QEMU's machines. `scsi_mod.scan=manual` spares the boot a scan of
        // all 256 targets of the virtio-scsi bus (a tenth of a cold boot
        // under TCG): the agent turns hot-plug scans back on and scans the
        // targets of the disks plugged before boot (`hull.scsi_targets`).
        let mut cmdline = String::from(
            "console=ttyS0 quiet panic=-1 reboot=t 8250.nr_uarts=1 no_timer_check scsi_mod.scan=manual",
        );
        if !self.extra_cmdline.is_empty() {
            cmdline.push(' ');
            cmdline.push_str(&self.extra_cmdline);
        }
        cmdline
    }

    /// The command line for one VM whose files and sockets QEMU inherits
    /// as `fds`: it opens no host path of its own.
    pub fn args(&self, config: &VmConfig, fds: &Passed) -> Vec<String> {
        let listening = if fds.listening {
            ",server=on,wait=off"
        } else {
            ""
        };
        let control = format!("fd={}{listening}", fds.control);
        let qmp = format!("fd={}{listening}", fds.qmp);
        // QEMU gives the disks of the command line targets 0, 1, … in order.
        let cmdline = format!(
            "{} hull.scsi_targets={}",
            self.kernel_cmdline(),
            config.disks.len()
        );
        // No ACPI: the kernel learns the virtio-mmio devices from the command
        // line QEMU appends, and boots faster without the ACPI tables.
        // No RTC: its IRQ 8 is one that virtio-mmio transports take without
        // a second IOAPIC, so a fifth virtio device (a 9p share) would lose
        // its interrupt. The host sets the guest's clock instead.
        let mut machine = String::from("microvm,x-option-roms=off,isa-serial=on,rtc=off,acpi=off");
        if config.memory_file.is_some() {
            machine.push_str(",memory-backend=mem");
        }
        let accel = self.accel_arg();
        let mut args: Vec<String> = [
            "-M",
            &machine,
            "-accel",
            &accel,
            "-cpu",
            self.accel.cpu_model(),
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            // A guest reboot or panic ends the VM rather than looping.
            "-no-reboot",
            // Modern virtio-mmio: fewer exits than the legacy register layout.
            "-global",
            "virtio-mmio.force-legacy=false",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.extend([
            "-smp".into(),
            config.vcpus.to_string(),
            "-m".into(),
            format!("{}M", config.memory_mib),
            // Names the VM in `ps` and, for a VM taken back after a
            // restart, ties the process to its directory.
            "-name".into(),
            format!("guest={}", escape(&vm_name(&config.run_dir))),
            "-kernel".into(),
            fd_path(fds.kernel),
            "-initrd".into(),
            fd_path(fds.initrd),
            "-append".into(),
            cmdline,
            // Appended to, so that hulld can cut the file's start when it
            // grows past its cap while QEMU keeps writing at its end.
            "-chardev".into(),
            format!("file,id=console,path={},append=on", fd_path(fds.console)),
            "-serial".into(),
            "chardev:console".into(),
            "-chardev".into(),
            format!("socket,id=qmp,{qmp}"),
            "-mon".into(),
            "chardev=qmp,mode=control".into(),
            "-device".into(),
            "virtio-serial-device".into(),
            "-chardev".into(),
            format!("socket,id=ctl,{control}"),
            "-device".into(),
            format!(
                "virtserialport,chardev=ctl,name={}",
                hull_proto::CONTROL_PORT_NAME
            ),
            "-device".into(),
            "virtio-rng-device".into(),
            "-device".into(),
            "virtio-scsi-device,id=scsi0".into(),
            // Sets a container's memory limit below its size and, by free
            // page reporting, hands pages the guest frees back to the host.
            // Not for RAM in a template's file: QEMU cannot drop pages of a
            // read-only file (it would log an error per report, which the
            // guest controls), and one it could write would have its holes
            // punched for every later clone. Templates go without it too,
            // as a clone's devices must be the template's.
            "-device".into(),
            format!(
                "virtio-balloon-device,id=balloon0,free-page-reporting={}",
                if config.memory_file.is_some() {
                    "off"
                } else {
                    "on"
                }
            ),
            "-netdev".into(),
            netdev_arg(&config.network, fds.tap),
            "-device".into(),
            format!(
                "virtio-net-device,netdev=net0,mac={}",
                hull_proto::nic_mac_text(0)
            ),
        ]);
        // The spare network devices, each on an empty hub of its own, where
        // a network joined later plugs in (`Vm::plug_nic`). Every VM has
        // them, so that clones match their template.
        for slot in 1..hull_proto::NIC_SLOTS {
            args.extend([
                "-netdev".into(),
                format!("hubport,id={},hubid={slot}", nic_netdev(slot)),
                "-device".into(),
                format!(
                    "virtio-net-device,netdev={},mac={}",
                    nic_netdev(slot),
                    hull_proto::nic_mac_text(slot)
                ),
            ]);
        }
        if let (Some(memory), Some(fd)) = (&config.memory_file, fds.memory) {
            // A clone maps the template's memory privately; with QEMU 8.2
            // or later it opens the file read-only, so that it can never
            // change what later clones load.
            let access = match (memory.shared, self.read_only_templates()) {
                (true, _) => "share=on",
                (false, true) => "share=off,readonly=on,rom=off",
                (false, false) => "share=off",
            };
            args.extend([
                "-object".into(),
                format!(
                    "memory-backend-file,id=mem,size={}M,mem-path={},{access}",
                    config.memory_mib,
                    fd_path(fd),
                ),
            ]);
        }
        if config.restore_from.is_some() {
            args.extend(["-incoming".into(), "defer".into()]);
        }
        for (index, share) in config.shares.iter().enumerate() {
            // passthrough: files keep their owners and modes, as a bind
            // mount's do: a QEMU with shares keeps the capabilities that
            // takes (see `spawn::share_caps`).
            args.extend([
                "-fsdev".into(),
                format!(
                    "local,id=fs{index},path={},security_model=passthrough{}",
                    share.path.display(),
                    if share.read_only { ",readonly=on" } else { "" }
                ),
                "-device".into(),
                format!("virtio-9p-device,fsdev=fs{index},mount_tag={}", share.tag),
            ]);
        }
        // Boot disks come as descriptors in fdsets of their own, which
        // QEMU's block layer opens as `/dev/fdset/N`.
        for (index, (disk, fd)) in config.disks.iter().zip(&fds.disks).enumerate() {
            let set = index + 1;
            args.extend([
                "-add-fd".into(),
                format!("fd={fd},set={set},opaque={}", escape(&disk.id)),
                "-blockdev".into(),
                format!(
                    "driver=file,filename=/dev/fdset/{set},node-name={},read-only={},cache.direct=off",
                    disk.id,
                    if disk.read_only { "on" } else { "off" }
                ),
                "-device".into(),
                format!(
                    "scsi-hd,bus=scsi0.0,drive={},serial={}",
                    disk.id, disk.serial
                ),
            ]);
        }
        if self.sandbox {
            args.extend(["-sandbox".into(), SANDBOX.into()]);
        }
        args
    }
}

/// QEMU's seccomp filter: no obsolete system calls, no change of uid or
/// capabilities, no new processes or programs, no scheduling or CPU
/// affinity changes.
pub const SANDBOX: &str = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny";

/// A path QEMU opens to reach a descriptor it inherited.
fn fd_path(fd: RawFd) -> String {
    format!("/proc/self/fd/{fd}")
}

/// The VM's name on QEMU's command line: its directory, with the slash
/// that lets a search for one directory's QEMU not match another's.
pub(super) fn vm_name(run_dir: &std::path::Path) -> String {
    format!("hull:{}/", run_dir.display())
}

/// Doubles commas, which would end a value in QEMU's option syntax.
fn escape(value: &str) -> String {
    value.replace(',', ",,")
}

/// The netdev of spare network device `slot`: its port on hub `slot`.
pub(super) fn nic_netdev(slot: usize) -> String {
    format!("nic{slot}")
}

/// The `-netdev` of the VM's network device; a tap comes opened, as `tap`.
fn netdev_arg(network: &NetBackend, tap: Option<RawFd>) -> String {
    match (network, tap) {
        (NetBackend::User { forwards }, _) => {
            let mut arg = String::from("user,id=net0");
            for forward in forwards {
                let proto = if forward.udp { "udp" } else { "tcp" };
                arg.push_str(&format!(
                    ",hostfwd={proto}:{}:{}-:{}",
                    forward.host_ip, forward.host_port, forward.guest_port
                ));
            }
            arg
        }
        (NetBackend::Tap { .. }, Some(fd)) => format!("tap,id=net0,fd={fd}"),
        // A hub port with nothing else on its hub.
        (NetBackend::Isolated | NetBackend::Tap { .. }, _) => "hubport,id=net0,hubid=0".into(),
    }
}

/// The descriptors QEMU inherits, by what they are for.
#[derive(Debug, Clone, Default)]
pub struct Passed {
    /// The control channel's and QMP's sockets: connected (the host keeps
    /// the other ends), or `listening` ones whose paths a restarted host
    /// connects to again.
    pub control: RawFd,
    pub qmp: RawFd,
    pub listening: bool,
    pub kernel: RawFd,
    pub initrd: RawFd,
    pub console: RawFd,
    pub memory: Option<RawFd>,
    pub tap: Option<RawFd>,
    /// One per boot disk, in order.
    pub disks: Vec<RawFd>,
}

#[cfg(test)]
mod tests {
    use super::super::tests::qemu;
    use super::*;
    use crate::{DiskConfig, DEFAULT_TCG_TB_SIZE_MIB};

    #[test]
    fn command_line_wires_sockets_disks_and_accelerator() {
        let config = VmConfig {
            id: "vm1".into(),
            run_dir: "/run/vm1".into(),
            vcpus: 2,
            memory_mib: 128,
            disks: vec![DiskConfig {
                id: "rootfs".into(),
                path: "/images/a.erofs".into(),
                serial: "hull-rootfs".into(),
                read_only: true,
            }],
            memory_file: None,
            restore_from: None,
            detached: false,
            network: NetBackend::default(),
            shares: vec![crate::HostShare {
                tag: "hull9p0".into(),
                path: "/srv/src".into(),
                read_only: true,
            }],
        };
        let fds = Passed {
            control: 7,
            qmp: 8,
            kernel: 9,
            initrd: 10,
            console: 11,
            disks: vec![12],
            ..Passed::default()
        };
        let args = qemu().args(&config, &fds).join(" ");
        assert!(args.contains(&format!(
            "-accel tcg,tb-size={DEFAULT_TCG_TB_SIZE_MIB} -cpu max"
        )));
        assert!(args.contains("-smp 2 -m 128M"));
        assert!(args.contains("socket,id=ctl,fd=7 "));
        assert!(args.contains("socket,id=qmp,fd=8 "));
        assert!(args.contains("virtserialport,chardev=ctl,name=hull.ctl"));
        assert!(args.contains("-add-fd fd=12,set=1,opaque=rootfs -blockdev driver=file,filename=/dev/fdset/1,node-name=rootfs,read-only=on"));
        assert!(args.contains("scsi-hd,bus=scsi0.0,drive=rootfs,serial=hull-rootfs"));
        // The one disk is target 0, which the agent scans for.
        assert!(args.contains(" hull.scsi_targets=1 "), "{args}");
        assert!(args.contains("-kernel /proc/self/fd/9 -initrd /proc/self/fd/10"));
        assert!(args
            .contains("file,id=console,path=/proc/self/fd/11,append=on -serial chardev:console"));
        assert!(args.contains("-name guest=hull:/run/vm1/ "));
        assert!(args.ends_with(&format!("-sandbox {SANDBOX}")));
        assert!(!args.contains("/images/a.erofs") && !args.contains("/k/vmlinux"));
        assert!(
            args.contains("-netdev hubport,id=net0,hubid=0 -device virtio-net-device,netdev=net0,mac=02:48:55:4c:00:00 ")
        );
        // The spares, each on its own hub, known by their MACs.
        assert!(args.contains(
            "-netdev hubport,id=nic1,hubid=1 -device virtio-net-device,netdev=nic1,mac=02:48:55:4c:00:01 "
        ));
        assert!(args.contains(
            "-netdev hubport,id=nic2,hubid=2 -device virtio-net-device,netdev=nic2,mac=02:48:55:4c:00:02 "
        ));
        // RAM of its own: pages the guest frees go back to the host.
        assert!(args.contains("virtio-balloon-device,id=balloon0,free-page-reporting=on"));
    }

    #[test]
    fn every_vm_has_a_network_device_on_its_own_backend() {
        let user = NetBackend::User {
            forwards: vec![
                crate::HostForward {
                    udp: false,
                    host_ip: "127.0.0.1".into(),
                    host_port: 8080,
                    guest_port: 80,
                },
                crate::HostForward {
                    udp: true,
                    host_ip: String::new(),
                    host_port: 5353,
                    guest_port: 53,
                },
            ],
        };
        assert_eq!(
            netdev_arg(&user, None),
            "user,id=net0,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=udp::5353-:53"
        );
        let tap = NetBackend::Tap {
            ifname: "hullt1".into(),
            netns: Some("/var/run/netns/pod".into()),
        };
        assert_eq!(netdev_arg(&tap, Some(14)), "tap,id=net0,fd=14");
    }

    #[test]
    fn clones_map_the_template_memory_privately_and_wait_for_state() {
        let config = VmConfig {
            id: "clone".into(),
            run_dir: "/run/clone".into(),
            vcpus: 1,
            memory_mib: 256,
            disks: vec![],
            memory_file: Some(crate::MemoryFile {
                path: "/dev/shm/t/memory".into(),
                shared: false,
            }),
            restore_from: Some("/dev/shm/t/state".into()),
            detached: true,
            network: NetBackend::default(),
            shares: Vec::new(),
        };
        let fds = Passed {
            control: 7,
            qmp: 8,
            listening: true,
            memory: Some(13),
            ..Passed::default()
        };
        let mut qemu = qemu();
        qemu.version = Some((10, 0));
        let args = qemu.args(&config, &fds).join(" ");
        assert!(args.contains("socket,id=ctl,fd=7,server=on,wait=off"));
        assert!(args.contains("acpi=off,memory-backend=mem"));
        assert!(args.contains(
            "memory-backend-file,id=mem,size=256M,mem-path=/proc/self/fd/13,share=off,readonly=on,rom=off"
        ));
        assert!(args.contains("-incoming defer"));
        // The template's pages cannot be dropped: the guest is not told to report.
        assert!(args.contains("virtio-balloon-device,id=balloon0,free-page-reporting=off"));
        // QEMU before 8.2 has no read-only backend.
        qemu.version = Some((7, 2));
        let args = qemu.args(&config, &fds).join(" ");
        assert!(args.contains("mem-path=/proc/self/fd/13,share=off "));
    }

    #[test]
    fn the_kernel_scans_no_bus_itself_and_presets_no_delay_loop() {
        let mut qemu = qemu();
        let line = qemu.kernel_cmdline();
        assert!(line.starts_with("console=ttyS0 quiet panic=-1 reboot=t "));
        assert!(line.contains(" 8250.nr_uarts=1"));
        // Manual scans alone would leave a clone's hot-plugged rootfs
        // unseen: the agent turns the scans of hot-plug events back on.
        assert!(line.contains(" scsi_mod.scan=manual"));
        // A preset delay loop (lpj=) is no gain: under TCG the loop's speed
        // follows the host's load, and a figure too high stretches every
        // busy-wait of the guest.
        qemu.extra_cmdline = "loglevel=8".into();
        let line = qemu.kernel_cmdline();
        assert!(!line.contains("lpj="));
        assert!(line.ends_with(" loglevel=8"));
    }

    #[test]
    fn the_translation_cache_size_applies_to_tcg_only() {
        let mut qemu = qemu();
        qemu.tcg_tb_size_mib = Some(8);
        assert_eq!(qemu.accel_arg(), "tcg,tb-size=8");
        qemu.tcg_tb_size_mib = None;
        assert_eq!(qemu.accel_arg(), "tcg");
        qemu.accel = Accel::Kvm;
        qemu.tcg_tb_size_mib = Some(8);
        assert_eq!(qemu.accel_arg(), "kvm");
    }
}
