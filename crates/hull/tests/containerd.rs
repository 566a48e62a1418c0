//! containerd-shim-hull-v2 under the distribution's containerd, driven by
//! `ctr`: a containerd of the tests' own (private socket, root and state)
//! with the busybox image imported, running tasks in Hull VMs.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use common::containerd::{self, pids_matching};
use common::netns::{self, NetNs};
use common::{busybox_archive, eventually, mem_total_mib, spawn_owned, stdout_of, text};

const RUNTIME: &str = "io.containerd.hull.v2";
const IMAGE: &str = "docker.io/library/busybox:latest";
const SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";

/// The tests' containerd; `None` (with the reason printed) when containerd
/// cannot be installed here.
struct Containerd(containerd::Containerd);

impl std::ops::Deref for Containerd {
    type Target = containerd::Containerd;
    fn deref(&self) -> &containerd::Containerd {
        &self.0
    }
}

fn containerd() -> Option<&'static Containerd> {
    static CONTAINERD: OnceLock<Option<Containerd>> = OnceLock::new();
    CONTAINERD.get_or_init(Containerd::start).as_ref()
}

impl Containerd {
    fn start() -> Option<Containerd> {
        if !containerd::available() {
            println!("skipping: containerd and ctr are not installed and scripts/deps.sh could not install them");
            return None;
        }
        // The CRI plugin wants CNI and more; ctr needs none of it.
        let config = |dir: &Path| {
            format!(
                "version = 2\nroot = \"{d}/root\"\nstate = \"{d}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{d}/containerd.sock\"\n",
                d = dir.display()
            )
        };
        let containerd = Containerd(containerd::Containerd::start(config, None));
        let archive = busybox_archive();
        stdout_of(&containerd.ctr(&["image", "import", archive.to_str().unwrap()]));
        Some(containerd)
    }

    fn ctr_with_input(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ctr runs");
        child.stdin.take().unwrap().write_all(input).unwrap();
        child.wait_with_output().unwrap()
    }

    /// `ctr run --runtime io.containerd.hull.v2 <flags> busybox <id> <cmd>`.
    fn run(&self, flags: &[&str], id: &str, cmd: &[&str]) -> Output {
        let mut args = vec!["run", "--runtime", RUNTIME];
        args.extend(flags);
        args.extend([IMAGE, id]);
        args.extend(cmd);
        self.ctr(&args)
    }

    /// The status column of `ctr task ls` for `id`.
    fn status(&self, id: &str) -> String {
        let out = stdout_of(&self.ctr(&["task", "ls"]));
        out.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|cols| cols.first() == Some(&id))
            .and_then(|cols| cols.get(2).map(|s| s.to_string()))
            .unwrap_or_default()
    }

    /// Kills a detached task, waits for it to stop, and removes it.
    fn remove(&self, id: &str) {
        stdout_of(&self.ctr(&["task", "kill", "-s", "KILL", id]));
        eventually(30, || match self.status(id).as_str() {
            "STOPPED" => Ok(()),
            other => Err(format!("{id} is {other}")),
        });
        stdout_of(&self.ctr(&["task", "rm", id]));
        stdout_of(&self.ctr(&["container", "rm", id]));
    }

    /// The shim processes serving this containerd that containerd started
    /// for a container whose id starts with `prefix`.
    fn shims_for(&self, prefix: &str) -> usize {
        let socket = self.dir.join("containerd.sock").display().to_string();
        let id_arg = format!("\0-id\0{prefix}");
        pids_matching(&["containerd-shim-hull-v2", &socket, &id_arg]).len()
    }

    /// The QEMU of the sandbox named after container `id` (of ctr's
    /// namespace, `default`).
    fn qemu_of(&self, id: &str) -> i32 {
        let vm_dir = self.dir.join("vms").join(format!("default-{id}"));
        let run_dir = format!("{}/", vm_dir.display());
        let pids = pids_matching(&["qemu-system", &run_dir]);
        assert_eq!(pids.len(), 1, "the VM of {id}: {pids:?}");
        pids[0]
    }

    /// Runs a first sandbox of the default size, which boots cold, and
    /// waits for the template it leaves.
    fn leave_a_template(&self, id: &str) {
        stdout_of(&self.run(&["--rm"], id, &["true"]));
        let templates = self.dir.join("templates");
        eventually(180, || {
            template_ready(&templates)
                .then_some(())
                .ok_or_else(|| format!("no sandbox template in {}", templates.display()))
        });
    }

    /// Whether the VM of sandbox `id` was resumed from a template.
    fn is_a_clone(&self, id: &str) -> bool {
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", self.qemu_of(id))).unwrap();
        String::from_utf8_lossy(&cmdline).contains("\0-incoming\0")
    }
}

fn host_boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_owned()
}

#[test]
fn ctr_run_rm_runs_the_command_in_a_vm_with_the_specs_env_and_cwd() {
    let Some(ctr) = containerd() else { return };
    let out = ctr.run(
        &["--rm", "--env", "GREETING=hi", "--cwd", "/tmp"],
        "rm-echo",
        &[
            "sh",
            "-c",
            "echo $GREETING; pwd; hostname; cat /proc/sys/kernel/random/boot_id",
        ],
    );
    let stdout = stdout_of(&out);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[..3], ["hi", "/tmp", "rm-echo"], "{stdout}");
    assert_ne!(
        lines[3],
        host_boot_id(),
        "the command ran on the host's kernel"
    );
    assert!(
        ctr.ctr(&["container", "info", "rm-echo"]).status.code() != Some(0),
        "--rm left the container"
    );
}

#[test]
fn host_directories_are_shared_live_and_host_files_copied() {
    let Some(ctr) = containerd() else { return };
    let host = tempfile::tempdir().unwrap();
    let path = |name: &str| host.path().join(name);
    std::fs::write(path("motd"), "from the host\n").unwrap();
    std::fs::create_dir(path("conf")).unwrap();
    std::fs::write(path("conf/a.conf"), "a=1\n").unwrap();
    std::fs::create_dir(path("data")).unwrap();
    let mount = |src: &str, dst: &str, mode: &str| {
        format!(
            "type=bind,src={},dst={dst},options=rbind:{mode}",
            path(src).display()
        )
    };
    let (motd, conf, data) = (
        mount("motd", "/etc/motd", "ro"),
        mount("conf", "/opt/conf", "ro"),
        mount("data", "/data", "rw"),
    );
    let id = "binds";
    let flags = ["-d", "--mount", &motd, "--mount", &conf, "--mount", &data];
    stdout_of(&ctr.run(&flags, id, &["sleep", "1000"]));
    let exec = |exec_id: &str, script: &str| {
        ctr.ctr(&["task", "exec", "--exec-id", exec_id, id, "sh", "-c", script])
    };

    let out = stdout_of(&exec("x1", "cat /etc/motd /opt/conf/a.conf"));
    assert_eq!(out, "from the host\na=1\n");
    std::fs::write(path("conf/b.conf"), "b=2\n").unwrap();
    assert_eq!(stdout_of(&exec("x2", "cat /opt/conf/b.conf")), "b=2\n");
    stdout_of(&exec("x3", "echo from the vm > /data/out"));
    assert_eq!(
        std::fs::read_to_string(path("data/out")).unwrap(),
        "from the vm\n"
    );
    // The sandbox's QEMU is confined as hulld's are: a mount namespace of
    // its own, which still received the binds made after boot, and a
    // cgroup of its own.
    let qemu = ctr.qemu_of(id);
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap();
    assert_ne!(ns(&qemu.to_string()), ns("self"));
    assert!(!Path::new(&format!("/proc/{qemu}/root/etc/shadow")).exists());
    let cgroup = std::fs::read_to_string(format!("/proc/{qemu}/cgroup")).unwrap();
    assert!(cgroup.contains("/hull/shim-"), "{cgroup}");
    let refused = exec("x4", "echo no > /opt/conf/c");
    assert_ne!(
        refused.status.code(),
        Some(0),
        "a read-only bind took a write"
    );
    // In QEMU's namespace the read-only bind is read-only too, so a QEMU
    // with 9p's capabilities cannot write through it either.
    let (ro_point, rw_point) = (
        shared_bind(ctr, id, qemu, "a.conf"),
        shared_bind(ctr, id, qemu, "out"),
    );
    let options = |point: &str| {
        std::fs::read_to_string(format!("/proc/{qemu}/mountinfo"))
            .unwrap()
            .lines()
            .map(|line| line.split(' ').map(str::to_owned).collect::<Vec<_>>())
            .find(|fields| fields[4] == point)
            .map(|fields| fields[5].clone())
            .unwrap()
    };
    let ro_options = options(&ro_point);
    assert!(ro_options.starts_with("ro,"), "{ro_options}");
    assert!(options(&rw_point).starts_with("rw,"));
    for options in [ro_options, options(&rw_point)] {
        assert!(
            options.contains("nosuid") && options.contains("nodev"),
            "{options}"
        );
    }
    let said = common::as_qemu::run_as(qemu, &format!("echo x > {ro_point}/c && echo wrote"));
    assert!(said.contains("Read-only file system"), "{said}");
    let said = common::as_qemu::run_as(qemu, &format!("echo x > {rw_point}/q && echo wrote"));
    assert_eq!(said, "wrote\n");
    assert!(!path("conf/c").exists() && path("data/q").is_file());

    ctr.remove(id);
    // The binds left the sandbox's share without taking the host's files.
    assert!(path("conf/a.conf").is_file() && path("data/out").is_file());
}

/// The mount point in `qemu`'s namespace of the bind, in the share of
/// sandbox `id`, that holds `file`.
fn shared_bind(ctr: &Containerd, id: &str, qemu: i32, file: &str) -> String {
    let share = ctr
        .dir
        .join("vms")
        .join(format!("default-{id}"))
        .join("share");
    let share = format!("{}/", share.display());
    let mountinfo = std::fs::read_to_string(format!("/proc/{qemu}/mountinfo")).unwrap();
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|point| point.starts_with(&share))
        .find(|point| Path::new(&format!("/proc/{qemu}/root{point}/{file}")).exists())
        .unwrap_or_else(|| panic!("no bind holding {file} below {share} in {mountinfo}"))
        .to_owned()
}

#[test]
fn ctr_run_exits_with_the_processs_code_and_stderr() {
    let Some(ctr) = containerd() else { return };
    let out = ctr.run(&["--rm"], "rm-exit", &["sh", "-c", "echo oops >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("oops"), "{}", text(&out.stderr));
}

#[test]
fn ctr_run_feeds_stdin_to_the_process_until_its_end() {
    let Some(ctr) = containerd() else { return };
    let args = [
        "run",
        "--rm",
        "--runtime",
        RUNTIME,
        IMAGE,
        "rm-stdin",
        "wc",
        "-l",
    ];
    let out = ctr.ctr_with_input(&args, b"one\ntwo\nthree\n");
    assert_eq!(stdout_of(&out).trim(), "3");
}

#[test]
fn a_detached_task_takes_exec_ps_metrics_pause_resume_and_kill() {
    let Some(ctr) = containerd() else { return };
    let id = "detached";
    stdout_of(&ctr.run(&["-d"], id, &["sleep", "1000"]));
    assert_eq!(ctr.status(id), "RUNNING");

    let ls = stdout_of(&ctr.ctr(&["task", "exec", "--exec-id", "e1", id, "ls", "/"]));
    assert!(ls.lines().any(|l| l == "bin"), "{ls}");
    let failed = ctr.ctr(&["task", "exec", "--exec-id", "e2", id, "sh", "-c", "exit 3"]);
    assert_eq!(failed.status.code(), Some(3), "{}", text(&failed.stderr));

    let ps = stdout_of(&ctr.ctr(&["task", "ps", id]));
    assert!(ps.lines().count() >= 2, "no process listed: {ps}");
    let metrics = stdout_of(&ctr.ctr(&["task", "metrics", id]));
    assert!(metrics.contains("memory.usage_in_bytes"), "{metrics}");

    stdout_of(&ctr.ctr(&["task", "pause", id]));
    assert_eq!(ctr.status(id), "PAUSED");
    stdout_of(&ctr.ctr(&["task", "resume", id]));
    assert_eq!(ctr.status(id), "RUNNING");
    let after = stdout_of(&ctr.ctr(&["task", "exec", "--exec-id", "e3", id, "echo", "back"]));
    assert_eq!(after.trim(), "back");

    ctr.remove(id);
}

#[test]
fn the_specs_rlimits_hold_the_task_and_its_execs() {
    let Some(ctr) = containerd() else { return };
    // ctr's default spec holds open files to 1024:1024 (ctr has no flag
    // to change it); the guest's own hard limit is 4096.
    let id = "rlimits";
    stdout_of(&ctr.run(&["-d"], id, &["sleep", "1000"]));
    let script = "ulimit -n; ulimit -Hn; grep 'open files' /proc/1/limits";
    let out = stdout_of(&ctr.ctr(&["task", "exec", "--exec-id", "l1", id, "sh", "-c", script]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[..2], ["1024", "1024"], "{out}");
    let init: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(init[3..5], ["1024", "1024"], "the task's own: {out}");
    ctr.remove(id);
}

#[test]
fn containers_of_one_sandbox_share_its_vm_and_shim() {
    let Some(ctr) = containerd() else { return };
    let sandbox = format!("{SANDBOX_ID}=pod-a");
    let boot_id = |id: &str, exec: &str| {
        let out = ctr.ctr(&[
            "task",
            "exec",
            "--exec-id",
            exec,
            id,
            "cat",
            "/proc/sys/kernel/random/boot_id",
        ]);
        stdout_of(&out).trim().to_owned()
    };
    // A pod's emptyDir: one host directory bound into both containers.
    let empty_dir = tempfile::tempdir().unwrap();
    let volume = format!(
        "type=bind,src={},dst=/cache,options=rbind:rw",
        empty_dir.path().display()
    );
    for (id, kind) in [("pod-a-pause", "sandbox"), ("pod-a-app", "container")] {
        let kind = format!("io.kubernetes.cri.container-type={kind}");
        let flags = ["-d", "--annotation", &sandbox, "--annotation", &kind];
        let flags = [&flags[..], &["--mount", &volume]].concat();
        stdout_of(&ctr.run(&flags, id, &["sleep", "1000"]));
    }
    assert_eq!(boot_id("pod-a-pause", "b1"), boot_id("pod-a-app", "b2"));
    let write = ["task", "exec", "--exec-id", "w1", "pod-a-app", "sh", "-c"];
    stdout_of(&ctr.ctr(&[&write[..], &["echo shared > /cache/f"]].concat()));
    let read = [
        "task",
        "exec",
        "--exec-id",
        "r1",
        "pod-a-pause",
        "cat",
        "/cache/f",
    ];
    assert_eq!(stdout_of(&ctr.ctr(&read)), "shared\n");
    assert_eq!(ctr.shims_for("pod-a-"), 1);
    assert_ne!(boot_id("pod-a-app", "b3"), host_boot_id());

    // The sandbox outlives one of its containers, then goes with the last.
    ctr.remove("pod-a-app");
    assert_eq!(boot_id("pod-a-pause", "b4").len(), 36);
    ctr.remove("pod-a-pause");
    eventually(30, || match ctr.shims_for("pod-a-") {
        0 => Ok(()),
        n => Err(format!("{n} shims of the sandbox still run")),
    });
}

/// The files named `name` that the QEMU of process `qemu` holds open.
fn open_files_named(qemu: i32, name: &str) -> usize {
    std::fs::read_dir(format!("/proc/{qemu}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter(|target| target.to_string_lossy().contains(name))
        .count()
}

#[test]
fn a_deleted_container_leaves_its_sandboxs_vm_with_its_disk() {
    let Some(ctr) = containerd() else { return };
    let sandbox = format!("{SANDBOX_ID}=pod-b");
    let create = |id: &str, kind: &str| {
        let kind = format!("io.kubernetes.cri.container-type={kind}");
        let flags = ["-d", "--annotation", &sandbox, "--annotation", &kind];
        stdout_of(&ctr.run(&flags, id, &["sleep", "1000"]));
    };
    // The guest's disks, as the sandbox's first container sees them.
    let exec = std::cell::Cell::new(0);
    let disks = |id: &str| {
        exec.set(exec.get() + 1);
        let exec_id = format!("d{}", exec.get());
        let script = "ls /sys/block | grep '^sd' || true";
        let out = ctr.ctr(&[
            "task",
            "exec",
            "--exec-id",
            &exec_id,
            id,
            "sh",
            "-c",
            script,
        ]);
        stdout_of(&out).lines().count()
    };
    create("pod-b-pause", "sandbox");
    create("pod-b-app", "container");
    let qemu = ctr.qemu_of("pod-b");
    assert_eq!(disks("pod-b-pause"), 2);
    assert_eq!(open_files_named(qemu, "hull-rootfs.erofs"), 2);

    ctr.remove("pod-b-app");
    eventually(30, || match disks("pod-b-pause") {
        1 => Ok(()),
        n => Err(format!("the guest still has {n} disks")),
    });
    assert_eq!(
        open_files_named(qemu, "hull-rootfs.erofs"),
        1,
        "QEMU still holds the deleted container's image"
    );
    let console = std::fs::read_to_string(ctr.dir.join("vms/default-pod-b/console.log")).unwrap();
    assert!(console.contains("removed container pod-b-app"), "{console}");

    // A container created after it gets a disk of its own and runs.
    create("pod-b-next", "container");
    assert_eq!(disks("pod-b-next"), 2);
    ctr.remove("pod-b-next");
    ctr.remove("pod-b-pause");
}

#[test]
fn a_task_whose_vm_dies_stops_with_255() {
    let Some(ctr) = containerd() else { return };
    let id = "vm-dies";
    stdout_of(&ctr.run(&["-d"], id, &["sleep", "1000"]));
    let qemu = ctr.qemu_of(id);
    // SAFETY: signalling the QEMU of this test's own sandbox.
    unsafe { libc::kill(qemu, libc::SIGKILL) };
    eventually(30, || match ctr.status(id).as_str() {
        "STOPPED" => Ok(()),
        other => Err(format!("{id} is {other}")),
    });
    let deleted = ctr.ctr(&["task", "rm", id]);
    assert!(
        text(&deleted.stderr).contains("exit code 255"),
        "{}",
        text(&deleted.stderr)
    );
    stdout_of(&ctr.ctr(&["container", "rm", id]));
}

#[test]
fn ctr_run_t_gives_the_process_a_terminal_of_the_callers_size() {
    let Some(ctr) = containerd() else { return };
    // `script` (bsdutils) gives ctr the terminal that `-t` wants. ctr sends
    // its size just after the start, to any runtime (runc too): a process
    // that asks at once may ask first, so this one waits a moment.
    let inner = format!(
        "stty cols 100 rows 30; ctr --address {} run --rm -t --runtime {RUNTIME} {IMAGE} rm-tty \
         sh -c 'sleep 1; stty size; tty; exit 4'",
        ctr.dir.join("containerd.sock").display()
    );
    let out = Command::new("script")
        .args(["-eqc", &inner, "/dev/null"])
        .stdin(Stdio::null())
        .output()
        .expect("script runs");
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(4), "{stdout}{}", text(&out.stderr));
    assert!(stdout.contains("30 100"), "{stdout}");
    assert!(stdout.contains("/dev/pts/"), "{stdout}");
}

/// Whether a sandbox template is ready under `dir` (`SIZE/KEY/ready`).
fn template_ready(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|size| {
            std::fs::read_dir(size.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .any(|template| template.path().join("ready").is_file())
}

#[test]
fn sandboxes_after_the_first_are_clones_of_its_template() {
    let Some(ctr) = containerd() else { return };
    // The first sandbox of the size boots cold and leaves a template.
    ctr.leave_a_template("tpl-first");

    // A clone: resumed from the template's state, with its own 9p share
    // for the rootfs and a read-write host directory.
    let host = tempfile::tempdir().unwrap();
    let data = format!(
        "type=bind,src={},dst=/data,options=rbind:rw",
        host.path().display()
    );
    let id = "tpl-clone";
    stdout_of(&ctr.run(&["-d", "--mount", &data], id, &["sleep", "1000"]));
    assert!(ctr.is_a_clone(id), "the sandbox VM was booted, not cloned");
    let script = "echo from-the-clone > /data/f; hostname; ls /bin/busybox";
    let out = stdout_of(&ctr.ctr(&["task", "exec", "--exec-id", "e1", id, "sh", "-c", script]));
    assert_eq!(out, "tpl-clone\n/bin/busybox\n");
    assert_eq!(
        std::fs::read_to_string(host.path().join("f")).unwrap(),
        "from-the-clone\n"
    );
    ctr.remove(id);
}

#[test]
fn a_task_in_a_network_namespace_takes_over_its_interface() {
    let Some(ctr) = containerd() else { return };
    // As CNI leaves a pod's namespace: a veth with the pod's address and a
    // default route, its peer in a namespace of its own.
    let (pod, peer) = (NetNs::new("pod"), NetNs::new("peer"));
    netns::link(&peer, "10.77.0.1/24", &pod, "10.77.0.2/24");
    pod.ip(&["route", "add", "default", "via", "10.77.0.1"]);
    pod.ip(&["route", "add", "10.99.0.0/16", "via", "10.77.0.1"]);
    let veth_mac = text(
        &pod.exec("sh", &["-c", "cat /sys/class/net/veth*/address"])
            .stdout,
    );
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "from-the-peer\n").unwrap();
    let mut server = Command::new("ip");
    server.args([
        "netns",
        "exec",
        &peer.name,
        "busybox",
        "httpd",
        "-f",
        "-p",
        "10.77.0.1:8080",
    ]);
    server.arg("-h").arg(www.path());
    spawn_owned(server);

    // A clone of the size's template: its tap is its own, opened in the
    // pod's namespace, though the template had none.
    ctr.leave_a_template("net-first");
    let id = "net-pod";
    let with_ns = format!("network:/var/run/netns/{}", pod.name);
    let serve =
        "mkdir /tmp/www; echo from-the-vm > /tmp/www/index.html; exec httpd -f -p 8081 -h /tmp/www";
    stdout_of(&ctr.run(&["-d", "--with-ns", &with_ns], id, &["sh", "-c", serve]));
    let exec = |exec_id: &str, script: &str| {
        stdout_of(&ctr.ctr(&["task", "exec", "--exec-id", exec_id, id, "sh", "-c", script]))
    };
    assert!(ctr.is_a_clone(id), "the sandbox VM was booted, not cloned");
    let seen = exec(
        "n1",
        "cat /sys/class/net/eth0/address; ip -4 -o addr show eth0; ip route",
    );
    assert!(
        seen.starts_with(&veth_mac),
        "the guest's MAC is not the pod's: {seen}"
    );
    assert!(seen.contains("inet 10.77.0.2/24"), "{seen}");
    assert!(seen.contains("default via 10.77.0.1"), "{seen}");
    assert!(seen.contains("10.99.0.0/16 via 10.77.0.1"), "{seen}");
    assert_eq!(
        exec("n2", "wget -q -O - http://10.77.0.1:8080/"),
        "from-the-peer\n"
    );
    assert_eq!(
        peer.within(|| common::http_get("10.77.0.2", 8081)),
        "from-the-vm\n"
    );
    let links = text(&pod.ip(&["-o", "link"]).stdout);
    assert!(
        links.contains("hull0"),
        "no tap in the pod's namespace: {links}"
    );

    // The namespace is left as CNI made it once the sandbox is gone.
    ctr.remove(id);
    eventually(30, || {
        let links = text(&pod.ip(&["-o", "link"]).stdout);
        let qdiscs = text(&pod.exec("tc", &["qdisc", "show"]).stdout);
        match links.contains("hull0") || qdiscs.contains("ingress") {
            false => Ok(()),
            true => Err(format!("the wiring stays: {links}{qdiscs}")),
        }
    });
    assert!(text(&pod.ip(&["-o", "addr"]).stdout).contains("10.77.0.2/24"));
}

/// Sends the Task API's `Update` to the shim of task `id`, as containerd's
/// CRI plugin does for UpdateContainerResources (`ctr` has no command for
/// it): `resources` is the runtime spec's `LinuxResources` as JSON.
fn update_task(ctr: &Containerd, id: &str, resources: &str) -> Result<(), String> {
    use containerd_shim_protos::api::UpdateTaskRequest;
    use containerd_shim_protos::protobuf::well_known_types::any::Any;
    use containerd_shim_protos::shim_sync::{Client, TaskClient};
    let bundle = ctr
        .dir
        .join("state/io.containerd.runtime.v2.task/default")
        .join(id);
    let address = std::fs::read_to_string(bundle.join("address")).unwrap();
    let client = TaskClient::new(Client::connect(address.trim()).unwrap());
    let request = UpdateTaskRequest {
        id: id.to_owned(),
        resources: Some(Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
            value: resources.as_bytes().to_vec(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    let timeout = containerd_shim_protos::ttrpc::context::with_timeout(30_000_000_000);
    client
        .update(timeout, &request)
        .map(drop)
        .map_err(|e| e.to_string())
}

#[test]
fn the_vm_is_sized_by_the_tasks_limits_and_updates_move_its_hold() {
    let Some(ctr) = containerd() else { return };
    let id = "sized";
    let memory = (1500u64 << 20).to_string();
    let flags = ["-d", "--memory-limit", &memory, "--cpus", "1.5"];
    stdout_of(&ctr.run(&flags, id, &["sleep", "1000"]));
    // The smallest size that holds 1.5 CPUs and 1500 MiB: M2.
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", ctr.qemu_of(id))).unwrap();
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(cmdline.contains(" -smp 2 -m 2048M "), "{cmdline}");
    let guest = |exec_id: &str| {
        let script = "nproc; grep MemTotal /proc/meminfo";
        let out =
            stdout_of(&ctr.ctr(&["task", "exec", "--exec-id", exec_id, id, "sh", "-c", script]));
        let (cpus, meminfo) = out.split_once('\n').unwrap();
        (cpus.trim().parse::<u32>().unwrap(), mem_total_mib(meminfo))
    };
    let exec_ids = std::sync::atomic::AtomicUsize::new(0);
    let next = || {
        format!(
            "g{}",
            exec_ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        )
    };
    eventually(60, || match guest(&next()) {
        (2, mib) if (1400..=1500).contains(&mib) => Ok(()),
        seen => Err(format!("the guest has {seen:?} (CPUs, MiB of memory)")),
    });

    let half_a_cpu_and_a_gib =
        r#"{"memory": {"limit": 1073741824}, "cpu": {"quota": 50000, "period": 100000}}"#;
    update_task(ctr, id, half_a_cpu_and_a_gib).unwrap();
    eventually(60, || match guest(&next()) {
        (1, mib) if (924..=1024).contains(&mib) => Ok(()),
        seen => Err(format!("the guest has {seen:?} (CPUs, MiB of memory)")),
    });
    let beyond = update_task(ctr, id, r#"{"memory": {"limit": 4294967296}}"#).unwrap_err();
    assert!(beyond.contains("beyond the container's VM"), "{beyond}");
    ctr.remove(id);
}

#[test]
fn a_pods_size_annotation_or_cri_resources_size_its_vm() {
    let Some(ctr) = containerd() else { return };
    let sandbox = format!("{SANDBOX_ID}=pod-sized");
    let pause = "io.kubernetes.cri.container-type=sandbox";
    // CRI's pod-level resources: 2 CPUs, 512 MiB; S4 has 1 vCPU, so M2.
    let flags = [
        "-d",
        "--annotation",
        &sandbox,
        "--annotation",
        pause,
        "--annotation",
        "io.kubernetes.cri.sandbox-memory=536870912",
        "--annotation",
        "io.kubernetes.cri.sandbox-cpu-quota=200000",
        "--annotation",
        "io.kubernetes.cri.sandbox-cpu-period=100000",
    ];
    stdout_of(&ctr.run(&flags, "pod-sized-pause", &["sleep", "1000"]));
    let vm = ctr.dir.join("vms");
    let qemu = pids_matching(&[
        "qemu-system",
        &vm.display().to_string(),
        "-smp\x002\x00-m\x002048M",
    ]);
    assert_eq!(qemu.len(), 1, "no 2-vCPU, 2 GiB VM for the pod");
    let meminfo = || {
        let args = [
            "task",
            "exec",
            "--exec-id",
            "m1",
            "pod-sized-pause",
            "cat",
            "/proc/meminfo",
        ];
        stdout_of(&ctr.ctr(&args))
    };
    eventually(60, || match mem_total_mib(&meminfo()) {
        412..=512 => Ok(()),
        mib => Err(format!("the pod's guest has {mib} MiB")),
    });
    ctr.remove("pod-sized-pause");

    // Hull's own annotation names the size.
    let named = ["--rm", "--annotation", "io.hull.size=S2"];
    let out = stdout_of(&ctr.run(&named, "named-size", &["grep", "MemTotal", "/proc/meminfo"]));
    assert!((90..=128).contains(&mem_total_mib(&out)), "{out}");
    let unknown = ctr.run(
        &["--rm", "--annotation", "io.hull.size=XL"],
        "bad-size",
        &["true"],
    );
    assert!(!unknown.status.success());
    assert!(
        text(&unknown.stderr).contains("unknown size \"XL\""),
        "{}",
        text(&unknown.stderr)
    );
}
