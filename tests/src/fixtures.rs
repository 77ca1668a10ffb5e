//! Input files the tests hand to the tracer or read back: pod and service lists for
//! `--pods-from file:PATH` ([`pods_file`]), temporary files removed on drop ([`TempFile`]), and
//! YAML read as JSON ([`yaml_as_json`]).

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use crate::Value;

/// `kubectl get pods -A -o json` naming the lab's hosts (name, IP) as pods of namespace `lab`,
/// for `--pods-from file:PATH`.
pub fn pods_file(pods: &[(&str, &str)]) -> String {
    pods_and_services_file(pods, &[])
}

/// [`pods_file`] with these Service objects too (`kubectl get pods,services -A -o json`).
pub fn pods_and_services_file(pods: &[(&str, &str)], services: &[Value]) -> String {
    let items: Vec<Value> = pods
        .iter()
        .enumerate()
        .map(|(i, (name, ip))| {
            serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": "lab", "uid": format!("00000000-0000-0000-0000-{i:012}"), "labels": {"app": name}},
                "spec": {"nodeName": "node-lab", "containers": [{"name": "c", "image": "i"}]},
                "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}]}
            })
        })
        .chain(services.iter().cloned())
        .collect();
    serde_json::json!({"apiVersion": "v1", "kind": "List", "metadata": {"resourceVersion": ""}, "items": items}).to_string()
}

/// A temporary file, removed on drop.
pub struct TempFile(pub PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// The Python venv scripts/setup.sh installs kubernetes-validate (and PyYAML with it) into.
pub const PY_VENV: &str = "/opt/tracer-py";

/// A YAML file as JSON, parsed by PyYAML (the workspace has no YAML crate).
pub fn yaml_as_json(file: &Path) -> Value {
    let python = Path::new(PY_VENV).join("bin/python3");
    let out = Command::new(&python)
        .args(["-c", "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))"])
        .arg(file)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/setup.sh installs it)", python.display()));
    assert!(out.status.success(), "YAML did not parse: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON from yaml")
}
