//! containerd-shim-hull-v2 under containerd's CRI plugin, driven over the
//! CRI gRPC API as kubelet drives it: a pod sandbox on a CNI bridge network,
//! a container created, started, exec'd into, logged and removed. The
//! tests' containerd runs in a network namespace of its own, so CNI's
//! bridge and veths never touch the host's network.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::containerd::{self, Containerd};
use common::netns::NetNs;
use common::{busybox_archive, eventually, repo, stdout_of, text};
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, ContainerStatsRequest, CreateContainerRequest,
    ExecSyncRequest, ImageSpec, LinuxContainerResources, PodSandboxConfig, PodSandboxMetadata,
    PodSandboxStatusRequest, RemoveContainerRequest, RemovePodSandboxRequest, RunPodSandboxRequest,
    StartContainerRequest, StopContainerRequest, StopPodSandboxRequest,
    UpdateContainerResourcesRequest,
};
use tonic::transport::{Channel, Endpoint, Uri};

const PAUSE_IMAGE: &str = "hull.test/pause:1";
const IMAGE: &str = "docker.io/library/busybox:latest";
const SUBNET: &str = "10.78.0.0/24";

/// Where Debian's containernetworking-plugins puts CNI's plugins.
const CNI_BIN: &str = "/usr/lib/cni";

/// A containerd with its CRI plugin, in the network namespace `netns`,
/// with the busybox image and a pause image imported for Kubernetes.
struct CriContainerd {
    containerd: Containerd,
    netns: NetNs,
}

impl Drop for CriContainerd {
    /// Pods' namespaces that a failed test left are pinned under the
    /// state directory (`netns_mounts_under_state_dir`): unpinned, they go.
    fn drop(&mut self) {
        let pinned = self
            .containerd
            .dir
            .join("state/io.containerd.grpc.v1.cri/netns");
        for entry in std::fs::read_dir(pinned).into_iter().flatten().flatten() {
            let _ = Command::new("umount").arg(entry.path()).status();
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

impl CriContainerd {
    fn start() -> Option<CriContainerd> {
        if !containerd::available() || !Path::new(CNI_BIN).join("bridge").exists() {
            println!("skipping: containerd and the CNI plugins are not installed and scripts/deps.sh could not install them");
            return None;
        }
        let config = |dir: &Path| {
            std::fs::create_dir_all(dir.join("net.d")).unwrap();
            // host-local's leases stay in the test's directory.
            let ipam = dir.join("ipam").display().to_string();
            let cni = format!(
                r#"{{"cniVersion": "1.0.0", "name": "hull-cri", "plugins": [{{
                    "type": "bridge", "bridge": "hullcri0", "isGateway": true,
                    "ipam": {{"type": "host-local", "ranges": [[{{"subnet": "{SUBNET}"}}]],
                             "dataDir": "{ipam}",
                             "routes": [{{"dst": "0.0.0.0/0"}}]}}}}]}}"#
            );
            std::fs::write(dir.join("net.d/10-hull.conflist"), cni).unwrap();
            format!(
                r#"version = 2
root = "{d}/root"
state = "{d}/state"
[grpc]
  address = "{d}/containerd.sock"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{d}/net.d"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "hull"
  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.hull]
    runtime_type = "io.containerd.hull.v2"
    pod_annotations = ["io.hull.*"]
"#,
                d = dir.display()
            )
        };
        // CNI's bridge and veths are made in containerd's namespace.
        let netns = NetNs::new("cri");
        let containerd = Containerd::start(config, Some(&netns.name));
        let cri = CriContainerd { containerd, netns };
        let pause = cri.containerd.dir.join("pause.tar");
        let built = Command::new("sh")
            .arg(repo().join("scripts/busybox-image.sh"))
            .arg(&pause)
            .arg(PAUSE_IMAGE)
            .env("IMAGE_CMD", r#"["sleep","2147483647"]"#)
            .output()
            .unwrap();
        assert!(built.status.success(), "{}", text(&built.stderr));
        for archive in [busybox_archive(), pause] {
            stdout_of(&cri.ctr(&["image", "import", archive.to_str().unwrap()]));
        }
        Some(cri)
    }

    /// `ctr` in the CRI plugin's namespace, `k8s.io`.
    fn ctr(&self, args: &[&str]) -> std::process::Output {
        let args = [&["--namespace", "k8s.io"], args].concat();
        self.containerd.ctr(&args)
    }

    async fn client(&self) -> RuntimeServiceClient<Channel> {
        let socket = self.containerd.socket();
        let channel = Endpoint::try_from("http://[::]:50051")
            .unwrap()
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(socket).await?;
                    Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                }
            }))
            .await
            .expect("containerd's CRI socket answers");
        RuntimeServiceClient::new(channel)
    }
}

fn sandbox_config(log_dir: &Path) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: "web".into(),
            uid: "hull-cri-test-web".into(),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: "web".into(),
        log_directory: log_dir.display().to_string(),
        annotations: HashMap::from([("io.hull.size".to_owned(), "S3".to_owned())]),
        ..Default::default()
    }
}

#[test]
fn a_pod_runs_in_a_vm_on_its_cni_network_under_the_cri_plugin() {
    let Some(cri) = CriContainerd::start() else {
        return;
    };
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let mut client = cri.client().await;
        let log_dir = cri.containerd.dir.join("pods/web");
        std::fs::create_dir_all(&log_dir).unwrap();
        let sandbox_config = sandbox_config(&log_dir);
        let pod = client
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(sandbox_config.clone()),
                runtime_handler: "hull".into(),
            })
            .await
            .expect("the pod sandbox runs")
            .into_inner()
            .pod_sandbox_id;
        let status = client
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: pod.clone(),
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner()
            .status
            .unwrap();
        let pod_ip = status.network.unwrap().ip;
        assert!(
            pod_ip.starts_with("10.78.0."),
            "CNI gave the pod {pod_ip:?}"
        );

        let serve = "mkdir -p /www; echo from-the-pod > /www/index.html; \
                     echo serving; exec httpd -f -p 8080 -h /www";
        let container = client
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.clone(),
                config: Some(ContainerConfig {
                    metadata: Some(ContainerMetadata {
                        name: "app".into(),
                        attempt: 0,
                    }),
                    image: Some(ImageSpec {
                        image: IMAGE.into(),
                        ..Default::default()
                    }),
                    command: vec!["sh".into(), "-c".into(), serve.into()],
                    log_path: "app.log".into(),
                    ..Default::default()
                }),
                sandbox_config: Some(sandbox_config.clone()),
            })
            .await
            .expect("the container is created")
            .into_inner()
            .container_id;
        client
            .start_container(StartContainerRequest {
                container_id: container.clone(),
            })
            .await
            .expect("the container starts");

        let exec = |cmd: &str| ExecSyncRequest {
            container_id: container.clone(),
            cmd: vec!["sh".into(), "-c".into(), cmd.into()],
            timeout: 60,
        };
        let seen = client
            .exec_sync(exec(
                "ip -4 -o addr show eth0; hostname; grep MemTotal /proc/meminfo",
            ))
            .await
            .unwrap()
            .into_inner();
        let stdout = text(&seen.stdout);
        assert_eq!(seen.exit_code, 0, "{stdout}{}", text(&seen.stderr));
        assert!(stdout.contains(&format!("inet {pod_ip}/24")), "{stdout}");
        assert!(stdout.contains("\nweb\n"), "{stdout}");
        // The pod's io.hull.size: S3, 256 MiB, not the host's memory.
        let mib = common::mem_total_mib(&stdout);
        assert!((200..=256).contains(&mib), "{stdout}");
        let failed = client.exec_sync(exec("exit 3")).await.unwrap().into_inner();
        assert_eq!(failed.exit_code, 3);
        // /etc/hosts is the pod's, as CRI wrote it, not the agent's own.
        let hosts = client
            .exec_sync(exec("cat /etc/hosts"))
            .await
            .unwrap()
            .into_inner();
        let cri_hosts = cri
            .containerd
            .dir
            .join("root/io.containerd.grpc.v1.cri/sandboxes")
            .join(&pod)
            .join("hosts");
        assert_eq!(
            text(&hosts.stdout),
            std::fs::read_to_string(cri_hosts).unwrap()
        );

        // Kubelet's in-place resize reaches the shim's update: the guest is
        // held to the container's new limit, within the pod's S3.
        client
            .update_container_resources(UpdateContainerResourcesRequest {
                container_id: container.clone(),
                linux: Some(LinuxContainerResources {
                    memory_limit_in_bytes: 128 << 20,
                    ..Default::default()
                }),
                ..Default::default()
            })
            .await
            .expect("the container's resources are updated");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let meminfo = client
                .exec_sync(exec("cat /proc/meminfo"))
                .await
                .unwrap()
                .into_inner();
            let mib = common::mem_total_mib(&text(&meminfo.stdout));
            if (100..=128).contains(&mib) {
                break;
            }
            assert!(Instant::now() < deadline, "the guest still has {mib} MiB");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let stats = client
            .container_stats(ContainerStatsRequest {
                container_id: container.clone(),
            })
            .await
            .expect("the container has stats")
            .into_inner()
            .stats
            .unwrap();
        let working_set = stats
            .memory
            .and_then(|m| m.working_set_bytes)
            .map(|v| v.value);
        assert!(working_set.is_some_and(|b| b > 0), "{working_set:?}");
        let cpu = stats
            .cpu
            .and_then(|c| c.usage_core_nano_seconds)
            .map(|v| v.value);
        assert!(cpu.is_some_and(|ns| ns > 0), "{cpu:?}");

        // The pod answers on its address from the node (here, containerd's
        // namespace, where CNI's bridge is).
        let body = cri.netns.within(|| common::http_get(&pod_ip, 8080));
        assert_eq!(body, "from-the-pod\n");
        let log = log_dir.join("app.log");
        eventually(30, || {
            let logged = std::fs::read_to_string(&log).unwrap_or_default();
            match logged.contains(" stdout F serving") {
                true => Ok(()),
                false => Err(format!("the CRI log has {logged:?}")),
            }
        });

        client
            .stop_container(StopContainerRequest {
                container_id: container.clone(),
                timeout: 10,
            })
            .await
            .expect("the container stops");
        client
            .remove_container(RemoveContainerRequest {
                container_id: container,
            })
            .await
            .expect("the container is removed");
        client
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod.clone(),
            })
            .await
            .expect("the pod stops");
        client
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod,
            })
            .await
            .expect("the pod is removed");
    });
    eventually(30, || match cri.containerd.qemus().len() {
        0 => Ok(()),
        n => Err(format!("{n} VMs of the pod still run")),
    });
}
