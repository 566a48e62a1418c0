//! QEMU's command line for one VM: the microvm machine, its devices and
//! their backends.

use std::os::fd::RawFd;
use std::path::PathBuf;

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

    /// The command line for one VM with its control and QMP `sockets`.
    pub fn args(&self, config: &VmConfig, sockets: &Sockets) -> Vec<String> {
        let (control, qmp) = match sockets {
            Sockets::Inherited { control, qmp } => (format!("fd={control}"), format!("fd={qmp}")),
            Sockets::Listening { control, qmp } => (
                format!("path={},server=on,wait=off", control.display()),
                format!("path={},server=on,wait=off", qmp.display()),
            ),
        };
        let console = config.run_dir.join("console.log");
        // Without ACPI there is no poweroff: the agent reboots instead, which a
        // triple fault (`reboot=t`) turns into a QEMU exit under `-no-reboot`.
        let mut cmdline = String::from("console=ttyS0 quiet panic=-1 reboot=t");
        if !self.extra_cmdline.is_empty() {
            cmdline.push(' ');
            cmdline.push_str(&self.extra_cmdline);
        }
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
            "-kernel".into(),
            self.artifacts.kernel.display().to_string(),
            "-initrd".into(),
            self.artifacts.initramfs.display().to_string(),
            "-append".into(),
            cmdline,
            // Appended to, so that hulld can cut the file's start when it
            // grows past its cap while QEMU keeps writing at its end.
            "-chardev".into(),
            format!("file,id=console,path={},append=on", console.display()),
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
            "-device".into(),
            "virtio-balloon-device,id=balloon0,free-page-reporting=on".into(),
            "-netdev".into(),
            netdev_arg(&config.network),
            "-device".into(),
            "virtio-net-device,netdev=net0".into(),
        ]);
        if let Some(memory) = &config.memory_file {
            args.extend([
                "-object".into(),
                format!(
                    "memory-backend-file,id=mem,size={}M,mem-path={},share={}",
                    config.memory_mib,
                    memory.path.display(),
                    if memory.shared { "on" } else { "off" }
                ),
            ]);
        }
        if config.restore_from.is_some() {
            args.extend(["-incoming".into(), "defer".into()]);
        }
        for (index, share) in config.shares.iter().enumerate() {
            // passthrough: files keep their owners and modes, as a bind
            // mount's do (hulld runs as root).
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
        for disk in &config.disks {
            args.extend([
                "-blockdev".into(),
                format!(
                    "driver=file,filename={},node-name={},read-only={},cache.direct=off",
                    disk.path.display(),
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
        args
    }
}

/// The `-netdev` of the VM's network device.
fn netdev_arg(network: &NetBackend) -> String {
    match network {
        // A hub port with nothing else on its hub.
        NetBackend::Isolated => "hubport,id=net0,hubid=0".into(),
        NetBackend::User { forwards } => {
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
        NetBackend::Tap { ifname, .. } => {
            format!("tap,id=net0,ifname={ifname},script=no,downscript=no")
        }
    }
}

/// How QEMU gets its control channel and QMP sockets.
#[derive(Debug, Clone)]
pub enum Sockets {
    /// Connected socket pairs whose other ends the host keeps: no path on
    /// disk, so nothing to race for, clean up or outgrow `sun_path`.
    Inherited { control: RawFd, qmp: RawFd },
    /// Sockets QEMU listens on, so that a restarted host can connect again.
    Listening { control: PathBuf, qmp: PathBuf },
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
        let args = qemu()
            .args(&config, &Sockets::Inherited { control: 7, qmp: 8 })
            .join(" ");
        assert!(args.contains(&format!(
            "-accel tcg,tb-size={DEFAULT_TCG_TB_SIZE_MIB} -cpu max"
        )));
        assert!(args.contains("-smp 2 -m 128M"));
        assert!(args.contains("socket,id=ctl,fd=7 "));
        assert!(args.contains("socket,id=qmp,fd=8 "));
        assert!(args.contains("virtserialport,chardev=ctl,name=hull.ctl"));
        assert!(args.contains("filename=/images/a.erofs,node-name=rootfs,read-only=on"));
        assert!(args.contains("scsi-hd,bus=scsi0.0,drive=rootfs,serial=hull-rootfs"));
        assert!(args.contains("file,id=console,path=/run/vm1/console.log,append=on"));
        assert!(
            args.contains("-netdev hubport,id=net0,hubid=0 -device virtio-net-device,netdev=net0")
        );
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
            netdev_arg(&user),
            "user,id=net0,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=udp::5353-:53"
        );
        let tap = NetBackend::Tap {
            ifname: "hullt1".into(),
            netns: Some("/var/run/netns/pod".into()),
        };
        assert_eq!(
            netdev_arg(&tap),
            "tap,id=net0,ifname=hullt1,script=no,downscript=no"
        );
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
        let sockets = Sockets::Listening {
            control: "/run/clone/ctl".into(),
            qmp: "/run/clone/qmp".into(),
        };
        let args = qemu().args(&config, &sockets).join(" ");
        assert!(args.contains("socket,id=ctl,path=/run/clone/ctl,server=on,wait=off"));
        assert!(args.contains("acpi=off,memory-backend=mem"));
        assert!(args
            .contains("memory-backend-file,id=mem,size=256M,mem-path=/dev/shm/t/memory,share=off"));
        assert!(args.contains("-incoming defer"));
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
