use super::*;

fn refused(text: &str) -> Option<String> {
    let raw: Value = serde_norway::from_str(text).unwrap();
    refuse_host_access(&raw).err().map(|e| {
        assert_eq!(e.status, StatusCode::FORBIDDEN, "{text}");
        e.message
    })
}

fn pod_with(spec: &str) -> String {
    format!("metadata: {{name: p}}\nspec: {spec}")
}

#[test]
fn what_reaches_the_host_is_refused_with_the_reason() {
    let cases = [
        ("{volumes: [{name: root, hostPath: {path: /}}], containers: [{name: c, image: i}]}", "hostPath"),
        ("{hostNetwork: true, containers: [{name: c, image: i}]}", "hostNetwork"),
        ("{hostPID: true, containers: [{name: c, image: i}]}", "hostPID"),
        ("{hostIPC: true, containers: [{name: c, image: i}]}", "hostIPC"),
        ("{containers: [{name: c, image: i, securityContext: {privileged: true}}]}", "privileged"),
        ("{containers: [{name: c, image: i, securityContext: {capabilities: {add: [SYS_ADMIN]}}}]}", "capabilities"),
        ("{containers: [{name: c, image: i, volumeDevices: [{name: d, devicePath: /dev/xvda}]}]}", "devices"),
        ("{containers: [{name: c, image: i, resources: {limits: {nvidia.com/gpu: 1}}}]}", "devices"),
        ("{containers: [{name: c, image: i, resources: {requests: {hugepages-2Mi: 1Gi}}}]}", "devices"),
        ("{containers: [{name: c, image: i, ports: [{containerPort: 80, hostPort: 80}]}]}", "hostPort"),
        ("{initContainers: [{name: c, image: i, securityContext: {privileged: true}}], containers: []}", "privileged"),
    ];
    for (spec, reason) in cases {
        let message = refused(&pod_with(spec)).unwrap_or_else(|| panic!("{spec} was allowed"));
        assert!(message.contains(reason), "{spec}: {message}");
        assert!(message.contains("not open to tenants"), "{spec}: {message}");
    }
}

#[test]
fn what_stays_in_the_vm_is_allowed() {
    for spec in [
        "{containers: [{name: c, image: i}]}",
        "{hostNetwork: false, hostPID: false, containers: [{name: c, image: i}]}",
        "{volumes: [{name: v, emptyDir: {}}], containers: [{name: c, image: i, volumeMounts: [{name: v, mountPath: /v}]}]}",
        "{containers: [{name: c, image: i, securityContext: {privileged: false, capabilities: {add: []}}}]}",
        "{containers: [{name: c, image: i, ports: [{containerPort: 80}], resources: {limits: {cpu: 1, memory: 64Mi}}}]}",
    ] {
        assert_eq!(refused(&pod_with(spec)), None, "{spec}");
    }
}

fn sizes_of(text: &str) -> Result<Vec<String>, String> {
    let raw: Value = serde_norway::from_str(text).unwrap();
    let spec = pod::parse(text).unwrap();
    member_sizes(&raw, &spec)
        .map(|sizes| sizes.into_iter().map(size_name).collect())
        .map_err(|e| e.message)
}

#[test]
fn each_container_is_sized_by_its_resources_then_the_label_then_s4() {
    let two = "spec: {containers: [{name: a, image: i}, {name: b, image: i, resources: {limits: {memory: 1Gi}}}]}";
    assert_eq!(
        sizes_of(&format!("metadata: {{name: p}}\n{two}")).unwrap(),
        ["S4", "M1"]
    );
    let labelled = format!("metadata: {{name: p, labels: {{sh_hyper_instancetype: S2}}}}\n{two}");
    assert_eq!(sizes_of(&labelled).unwrap(), ["S2", "M1"]);
    let annotated =
        format!("metadata: {{name: p, annotations: {{sh_hyper_instancetype: s1}}}}\n{two}");
    assert_eq!(sizes_of(&annotated).unwrap(), ["S1", "M1"]);
    let unknown = format!("metadata: {{name: p, labels: {{sh_hyper_instancetype: XL9}}}}\n{two}");
    assert!(sizes_of(&unknown).unwrap_err().contains("XL9"));
    // The operator's VM-size annotation would make the VM other than counted.
    let vm_sized = format!("metadata: {{name: p, annotations: {{hull.sh/size: L3}}}}\n{two}");
    assert!(sizes_of(&vm_sized)
        .unwrap_err()
        .contains("sh_hyper_instancetype"));
}

#[test]
fn a_pods_vm_holds_the_sum_of_its_containers_sizes_up_to_the_largest() {
    let s4 = size::named("S4").unwrap();
    let m1 = size::named("M1").unwrap();
    assert_eq!(
        vm_size(&[s4, m1]).unwrap(),
        VmSize {
            vcpus: 2,
            memory_mib: 1536
        }
    );
    let l3 = size::named("L3").unwrap();
    assert_eq!(vm_size(&[l3]).unwrap(), l3);
    let too_much = vm_size(&[l3, size::named("S1").unwrap()]).unwrap_err();
    assert_eq!(too_much.status, StatusCode::BAD_REQUEST);
    assert!(too_much.message.contains("9 vCPUs"), "{}", too_much.message);
}
