//! Which nodes one instance of a type fits on now, as the scheduler would judge it: Ready and
//! schedulable, the node selector's labels, every NoSchedule / NoExecute taint tolerated, and
//! allocatable at least the instance's requests (a resource without a request requests its
//! limit, as in Kubernetes). Pure, so the reasons are unit-tested.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, Taint, Toleration};

use crate::api::instance_type::InstanceTypeSpec;

/// How many nodes pass each test in turn, and what stopped the last of them.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fit {
    pub nodes: usize,
    pub ready: usize,
    pub labelled: usize,
    pub tolerated: usize,
    pub fits: usize,
    /// Labels the selector asks for, `k=v` joined.
    selector: String,
    /// A taint that stopped a labelled node, for the message.
    untolerated: Option<String>,
    /// A resource no tolerated node has enough of: (name, requested, largest allocatable).
    short: Option<(String, String, String)>,
}

impl Fit {
    /// What `Ready` says: how many fit, or why none does.
    pub fn message(&self) -> String {
        if self.fits > 0 {
            return format!("{} of {} nodes fit one instance", self.fits, self.nodes);
        }
        if self.nodes == 0 {
            "no node in the cluster".into()
        } else if self.ready == 0 {
            format!("none of the {} nodes is Ready and schedulable", self.nodes)
        } else if self.labelled == 0 {
            format!(
                "no Ready node has the labels {} (of {} Ready nodes)",
                self.selector, self.ready
            )
        } else if self.tolerated == 0 {
            format!(
                "{} nodes have the labels, but each has a taint the type does not tolerate (e.g. {})",
                self.labelled,
                self.untolerated.as_deref().unwrap_or("?")
            )
        } else if let Some((name, want, most)) = &self.short {
            format!(
                "{} nodes have the labels and tolerated taints, but none has allocatable {name} {want} (the most is {most})",
                self.tolerated
            )
        } else {
            format!(
                "{} nodes have the labels and tolerated taints, but none has room for all of the requests at once",
                self.tolerated
            )
        }
    }
}

/// Counts the nodes one instance of `spec` fits on.
pub fn count<'a>(spec: &InstanceTypeSpec, nodes: impl IntoIterator<Item = &'a Node>) -> Fit {
    let requests = effective_requests(spec);
    let mut fit = Fit {
        selector: spec
            .node_selector
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
        ..Fit::default()
    };
    let mut most: BTreeMap<String, (f64, String)> = BTreeMap::new();
    for node in nodes {
        fit.nodes += 1;
        if !ready_and_schedulable(node) {
            continue;
        }
        fit.ready += 1;
        let labels = node.metadata.labels.clone().unwrap_or_default();
        if !spec
            .node_selector
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            continue;
        }
        fit.labelled += 1;
        let taints = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_deref())
            .unwrap_or(&[]);
        if let Some(t) = taints
            .iter()
            .find(|t| t.effect != "PreferNoSchedule" && !tolerated(t, &spec.tolerations))
        {
            fit.untolerated.get_or_insert_with(|| {
                format!(
                    "{}={}:{}",
                    t.key,
                    t.value.as_deref().unwrap_or(""),
                    t.effect
                )
            });
            continue;
        }
        fit.tolerated += 1;
        let allocatable = node
            .status
            .as_ref()
            .and_then(|s| s.allocatable.clone())
            .unwrap_or_default();
        let mut fits = true;
        for (name, (want, _)) in &requests {
            let have_text = allocatable
                .get(name)
                .map(|q| q.0.clone())
                .unwrap_or_else(|| "0".into());
            let have = parse_quantity(&have_text).unwrap_or(0.0);
            let best = most
                .entry(name.clone())
                .or_insert((have, have_text.clone()));
            if have > best.0 {
                *best = (have, have_text);
            }
            fits &= have >= *want;
        }
        if fits {
            fit.fits += 1;
        }
    }
    if fit.fits == 0 && fit.tolerated > 0 {
        // The first resource no tolerated node has enough of; else each is somewhere, but no
        // one node has them all.
        fit.short = requests.iter().find_map(|(name, (want, want_text))| {
            let (have, have_text) = most.get(name).cloned().unwrap_or((0.0, "0".into()));
            (have < *want).then(|| (name.clone(), want_text.clone(), have_text))
        });
    }
    fit
}

/// Requests, with each limit that has no request standing in for it: (value, as written).
fn effective_requests(spec: &InstanceTypeSpec) -> BTreeMap<String, (f64, String)> {
    let r = &spec.resources;
    r.limits
        .iter()
        .chain(r.requests.iter())
        .filter_map(|(k, q)| Some((k.clone(), (parse_quantity(&q.0)?, q.0.clone()))))
        .collect()
}

fn ready_and_schedulable(node: &Node) -> bool {
    let unschedulable = node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    ready && !unschedulable
}

/// Whether `tolerations` tolerate `taint` (Kubernetes' rules: an empty key with Exists tolerates
/// everything, an empty effect matches every effect).
fn tolerated(taint: &Taint, tolerations: &[Toleration]) -> bool {
    tolerations.iter().any(|t| {
        let effect = t.effect.as_deref().unwrap_or("");
        let key = t.key.as_deref().unwrap_or("");
        let exists = t.operator.as_deref() == Some("Exists");
        (effect.is_empty() || effect == taint.effect)
            && (key.is_empty() && exists
                || key == taint.key
                    && (exists
                        || t.value.as_deref().unwrap_or("")
                            == taint.value.as_deref().unwrap_or("")))
    })
}

/// A Kubernetes quantity as a number (CPU in cores, memory in bytes); `None` when unparsable.
pub fn parse_quantity(q: &str) -> Option<f64> {
    let q = q.trim();
    let suffixes: [(&str, f64); 13] = [
        ("Ki", 1024f64),
        ("Mi", 1024f64.powi(2)),
        ("Gi", 1024f64.powi(3)),
        ("Ti", 1024f64.powi(4)),
        ("Pi", 1024f64.powi(5)),
        ("Ei", 1024f64.powi(6)),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    for (s, mult) in suffixes {
        if let Some(n) = q.strip_suffix(s) {
            return n.parse::<f64>().ok().map(|n| n * mult);
        }
    }
    let n = q
        .strip_suffix('P')
        .map(|n| (n, 1e15))
        .or_else(|| q.strip_suffix('E').map(|n| (n, 1e18)));
    match n {
        Some((n, mult)) => n.parse::<f64>().ok().map(|n| n * mult),
        None => q.parse::<f64>().ok().filter(|n| n.is_finite()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) const GPU_TYPE: &str = r#"
apiVersion: mlcompute.io/v1alpha1
kind: InstanceType
metadata: {name: gpu, generation: 3}
spec:
  nodeSelector: {pool: gpu}
  tolerations: [{key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}]
  resources:
    requests: {cpu: "2", memory: 8Gi}
    limits: {cpu: "4", memory: 8Gi, nvidia.com/gpu: "1"}
"#;

    pub(crate) fn nodes() -> Vec<Node> {
        serde_yaml::from_str(
            r#"
- metadata: {name: cpu-1, labels: {pool: cpu}}
  status: {conditions: [{type: Ready, status: "True"}], allocatable: {cpu: "8", memory: 32Gi}}
- metadata: {name: gpu-small, labels: {pool: gpu}}
  spec: {taints: [{key: nvidia.com/gpu, value: present, effect: NoSchedule}]}
  status: {conditions: [{type: Ready, status: "True"}], allocatable: {cpu: 1500m, memory: 16Gi, nvidia.com/gpu: "1"}}
- metadata: {name: gpu-big, labels: {pool: gpu}}
  spec: {taints: [{key: nvidia.com/gpu, value: present, effect: NoSchedule}]}
  status: {conditions: [{type: Ready, status: "True"}], allocatable: {cpu: "16", memory: 64Gi, nvidia.com/gpu: "4"}}
- metadata: {name: gpu-cordoned, labels: {pool: gpu}}
  spec: {unschedulable: true}
  status: {conditions: [{type: Ready, status: "True"}], allocatable: {cpu: "16", memory: 64Gi, nvidia.com/gpu: "4"}}
- metadata: {name: gpu-down, labels: {pool: gpu}}
  status: {conditions: [{type: Ready, status: "False"}], allocatable: {cpu: "16", memory: 64Gi, nvidia.com/gpu: "4"}}
"#,
        )
        .unwrap()
    }

    fn spec(yaml: &str) -> InstanceTypeSpec {
        let it: crate::api::instance_type::InstanceType = serde_yaml::from_str(yaml).unwrap();
        it.spec
    }

    #[test]
    fn counts_only_ready_labelled_tolerated_nodes_with_room() {
        let fit = count(&spec(GPU_TYPE), &nodes());
        assert_eq!(
            (fit.nodes, fit.ready, fit.labelled, fit.tolerated, fit.fits),
            (5, 3, 2, 2, 1)
        );
        assert_eq!(fit.message(), "1 of 5 nodes fit one instance");
    }

    #[test]
    fn says_why_no_node_fits() {
        let mut s = spec(GPU_TYPE);
        s.node_selector = [("pool".to_string(), "tpu".to_string())].into();
        assert_eq!(
            count(&s, &nodes()).message(),
            "no Ready node has the labels pool=tpu (of 3 Ready nodes)"
        );
        let mut s = spec(GPU_TYPE);
        s.tolerations.clear();
        assert_eq!(
            count(&s, &nodes()).message(),
            "2 nodes have the labels, but each has a taint the type does not tolerate (e.g. nvidia.com/gpu=present:NoSchedule)"
        );
        let mut s = spec(GPU_TYPE);
        s.resources.limits.insert(
            "nvidia.com/gpu".into(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("8".into()),
        );
        assert_eq!(
            count(&s, &nodes()).message(),
            "2 nodes have the labels and tolerated taints, but none has allocatable nvidia.com/gpu 8 (the most is 4)"
        );
        let down: Vec<Node> = nodes()
            .into_iter()
            .filter(|n| n.metadata.name.as_deref() == Some("gpu-down"))
            .collect();
        assert_eq!(
            count(&s, &down).message(),
            "none of the 1 nodes is Ready and schedulable"
        );
        assert_eq!(count(&s, &[]).message(), "no node in the cluster");
    }

    #[test]
    fn a_request_below_its_limit_is_what_must_fit() {
        // gpu-small has 1.5 CPUs: enough for a request of 1 even though the limit is 4.
        let mut s = spec(GPU_TYPE);
        s.resources.requests.insert(
            "cpu".into(),
            k8s_openapi::apimachinery::pkg::api::resource::Quantity("1".into()),
        );
        assert_eq!(count(&s, &nodes()).fits, 2);
    }

    #[test]
    fn quantities() {
        for (q, want) in [
            ("100m", 0.1),
            ("2", 2.0),
            ("2Gi", 2.0 * 1024f64.powi(3)),
            ("1G", 1e9),
            ("1.5", 1.5),
            ("1e3", 1e3),
        ] {
            assert_eq!(parse_quantity(q), Some(want), "{q}");
        }
        assert_eq!(parse_quantity("lots"), None);
        assert_eq!(
            parse_quantity("1e999"),
            None,
            "an overflowing quantity is unparsable, not infinite"
        );
    }
}
