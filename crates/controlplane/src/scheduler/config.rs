//! `--config`: kube-scheduler's `KubeSchedulerConfiguration` (`kubescheduler.config.k8s.io/v1`),
//! decoded strictly (an unknown field is an error, as upstream's strict decoding), defaulted
//! and validated as upstream, with upstream's precedence: given a file, the deprecated flags
//! (`--kubeconfig`) are ignored and only the leader-election flags set on the command line
//! override it.
//!
//! Profiles: each `schedulerName` gets upstream's default plugins (`multiPoint`), changed by
//! the profile's `enabled`/`disabled` lists (`*` disables every default of that extension
//! point; an enabled default keeps its place and takes the given weight). Plugins upstream
//! has that need parts kaname has not built (volumes, images, gates) are accepted by name and
//! do nothing; the log says so once per profile. `pluginConfig` args are checked by plugin
//! name and otherwise not applied yet (the log says so).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::leader_election::LeaderElectionFlags;

pub const API_VERSION: &str = "kubescheduler.config.k8s.io/v1";
pub const KIND: &str = "KubeSchedulerConfiguration";

/// Upstream's default plugins (v1 `getDefaultPlugins`, multiPoint), in order, with their score
/// weights (0: not a score plugin).
pub const DEFAULT_PLUGINS: &[(&str, i64)] = &[
    ("SchedulingGates", 0),
    ("PrioritySort", 0),
    ("NodeUnschedulable", 0),
    ("NodeName", 0),
    ("TaintToleration", 3),
    ("NodeAffinity", 2),
    ("NodePorts", 0),
    ("NodeResourcesFit", 1),
    ("VolumeRestrictions", 0),
    ("NodeVolumeLimits", 0),
    ("VolumeBinding", 0),
    ("VolumeZone", 0),
    ("PodTopologySpread", 2),
    ("InterPodAffinity", 2),
    ("DefaultPreemption", 0),
    ("NodeResourcesBalancedAllocation", 1),
    ("ImageLocality", 1),
    ("DefaultBinder", 0),
];

/// Upstream plugins kaname does not implement (yet): accepted in a configuration, inert.
pub const INERT_PLUGINS: &[&str] =
    &["VolumeRestrictions", "NodeVolumeLimits", "VolumeBinding", "VolumeZone", "ImageLocality"];

/// The configuration the scheduler runs with, from `--config` or from the flags.
#[derive(Clone, Debug)]
pub struct SchedulerConfiguration {
    /// `clientConnection.kubeconfig` (or `--kubeconfig` without a file); None: inferred.
    pub kubeconfig: Option<PathBuf>,
    pub leader_election: LeaderElectionFlags,
    /// 0: upstream's adaptive percentage.
    pub percentage_of_nodes_to_score: i32,
    pub pod_initial_backoff: Duration,
    pub pod_max_backoff: Duration,
    pub profiles: Vec<Profile>,
}

/// One profile: a scheduler name and its plugins, resolved by name.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    pub scheduler_name: String,
    pub percentage_of_nodes_to_score: Option<i32>,
    /// Enabled plugin names, in upstream's order (filters and other extension points alike).
    pub plugins: Vec<String>,
    /// Score plugins and weights.
    pub scores: Vec<(String, i64)>,
}

impl Profile {
    /// Upstream's default profile under `name`.
    pub fn default_named(name: &str) -> Profile {
        Profile {
            scheduler_name: name.to_string(),
            percentage_of_nodes_to_score: None,
            plugins: DEFAULT_PLUGINS.iter().map(|(n, _)| n.to_string()).collect(),
            scores: DEFAULT_PLUGINS.iter().filter(|(_, w)| *w > 0).map(|(n, w)| (n.to_string(), *w)).collect(),
        }
    }

    pub fn enabled(&self, plugin: &str) -> bool {
        self.plugins.iter().any(|p| p == plugin)
    }
}

// The file's shape. Every field optional, as Go's pointers and omitempty make them; unknown
// fields refused. Fields upstream has that kaname accepts without acting on them (profiling,
// client QPS and content types: the kube client has neither limit nor protobuf) are kept for
// the strict decoding only.

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
struct File {
    api_version: Option<String>,
    kind: Option<String>,
    parallelism: Option<i32>,
    leader_election: Option<LeaderElectionFile>,
    client_connection: Option<ClientConnectionFile>,
    percentage_of_nodes_to_score: Option<i32>,
    pod_initial_backoff_seconds: Option<i64>,
    pod_max_backoff_seconds: Option<i64>,
    profiles: Option<Vec<ProfileFile>>,
    extenders: Option<Vec<Value>>,
    enable_profiling: Option<bool>,
    enable_contention_profiling: Option<bool>,
    delay_cache_until_active: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LeaderElectionFile {
    leader_elect: Option<bool>,
    lease_duration: Option<String>,
    renew_deadline: Option<String>,
    retry_period: Option<String>,
    resource_lock: Option<String>,
    resource_name: Option<String>,
    resource_namespace: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(dead_code)]
struct ClientConnectionFile {
    kubeconfig: Option<String>,
    accept_content_types: Option<String>,
    content_type: Option<String>,
    qps: Option<f64>,
    burst: Option<i64>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ProfileFile {
    scheduler_name: Option<String>,
    percentage_of_nodes_to_score: Option<i32>,
    plugins: Option<PluginsFile>,
    plugin_config: Option<Vec<PluginConfigFile>>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PluginsFile {
    pre_enqueue: Option<PluginSet>,
    queue_sort: Option<PluginSet>,
    pre_filter: Option<PluginSet>,
    filter: Option<PluginSet>,
    post_filter: Option<PluginSet>,
    pre_score: Option<PluginSet>,
    score: Option<PluginSet>,
    reserve: Option<PluginSet>,
    permit: Option<PluginSet>,
    pre_bind: Option<PluginSet>,
    bind: Option<PluginSet>,
    post_bind: Option<PluginSet>,
    multi_point: Option<PluginSet>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PluginSet {
    enabled: Option<Vec<PluginRef>>,
    disabled: Option<Vec<PluginRef>>,
}

#[derive(Deserialize, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PluginRef {
    name: String,
    weight: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PluginConfigFile {
    name: String,
    #[allow(dead_code)]
    args: Option<Value>,
}

/// Upstream's default configuration with the given leader-election flags (no --config).
pub fn defaults(flags: &LeaderElectionFlags) -> SchedulerConfiguration {
    SchedulerConfiguration {
        kubeconfig: None,
        leader_election: flags.clone(),
        percentage_of_nodes_to_score: 0,
        pod_initial_backoff: Duration::from_secs(1),
        pod_max_backoff: Duration::from_secs(10),
        profiles: vec![Profile::default_named(super::DEFAULT_SCHEDULER_NAME)],
    }
}

/// Loads `path` (YAML or JSON); `flags` are the leader-election flags, `explicit` the ids of
/// the ones set on the command line (they override the file, as upstream's
/// `ApplyLeaderElectionTo`).
pub fn load(path: &Path, flags: &LeaderElectionFlags, explicit: &[String]) -> Result<SchedulerConfiguration, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    parse(&text, flags, explicit)
        .map_err(|e| format!("failed to load config file {:?}: {e}", path.display().to_string()))
}

fn parse(text: &str, flags: &LeaderElectionFlags, explicit: &[String]) -> Result<SchedulerConfiguration, String> {
    let value: Value = serde_norway::from_str(text).map_err(|e| format!("error converting YAML to JSON: {e}"))?;
    let api_version = value["apiVersion"].as_str().unwrap_or("");
    let kind = value["kind"].as_str().unwrap_or("");
    if kind.is_empty() {
        return Err(format!("Object 'Kind' is missing in '{}'", serde_json::to_string(&value).unwrap_or_default()));
    }
    if api_version != API_VERSION || kind != KIND {
        return Err(format!("no kind {kind:?} is registered for version {api_version:?} in scheme"));
    }
    let file: File = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        match inner.strip_prefix("unknown field `").and_then(|r| r.split('`').next()) {
            // Upstream names an unknown field by its whole path (sigs.k8s.io/json).
            Some(field) => {
                let full = if path == "." || path == field {
                    field.to_string()
                } else if path.ends_with(field) {
                    path
                } else {
                    format!("{path}.{field}")
                };
                format!("strict decoding error: unknown field {full:?}")
            }
            None => format!("{path}: {inner}"),
        }
    })?;
    resolve(file, flags, explicit)
}

fn resolve(file: File, flags: &LeaderElectionFlags, explicit: &[String]) -> Result<SchedulerConfiguration, String> {
    let mut errs = Vec::new();
    let parallelism = file.parallelism.unwrap_or(16);
    if parallelism <= 0 {
        errs.push(format!("parallelism: Invalid value: {parallelism}: should be an integer value greater than zero"));
    }
    let percentage = file.percentage_of_nodes_to_score.unwrap_or(0);
    if !(0..=100).contains(&percentage) {
        errs.push(format!("percentageOfNodesToScore: Invalid value: {percentage}: not in valid range [0-100]"));
    }
    let initial = file.pod_initial_backoff_seconds.unwrap_or(1);
    let max = file.pod_max_backoff_seconds.unwrap_or(10);
    if initial <= 0 {
        errs.push(format!("podInitialBackoffSeconds: Invalid value: {initial}: must be greater than 0"));
    }
    if max < initial {
        errs.push(format!(
            "podMaxBackoffSeconds: Invalid value: {max}: must be greater than or equal to PodInitialBackoffSeconds"
        ));
    }
    if file.extenders.as_ref().is_some_and(|e| !e.is_empty()) {
        errs.push("extenders: Forbidden: scheduler extenders are not supported by kaname".into());
    }

    // Leader election: upstream's defaults, the file, then the flags set on the command line.
    let mut le = LeaderElectionFlags { leader_elect_resource_name: Some("kube-scheduler".into()), ..flags.defaults() };
    if let Some(f) = file.leader_election {
        let dur = |field: &str, v: Option<String>, d: Duration, errs: &mut Vec<String>| match v {
            Some(s) => kaname_goflags::duration::parse(&s).unwrap_or_else(|e| {
                errs.push(format!("leaderElection.{field}: {e}"));
                d
            }),
            None => d,
        };
        le.leader_elect = f.leader_elect.unwrap_or(le.leader_elect);
        le.leader_elect_lease_duration =
            dur("leaseDuration", f.lease_duration, le.leader_elect_lease_duration, &mut errs);
        le.leader_elect_renew_deadline =
            dur("renewDeadline", f.renew_deadline, le.leader_elect_renew_deadline, &mut errs);
        le.leader_elect_retry_period = dur("retryPeriod", f.retry_period, le.leader_elect_retry_period, &mut errs);
        le.leader_elect_resource_lock = f.resource_lock.unwrap_or(le.leader_elect_resource_lock);
        le.leader_elect_resource_name = f.resource_name.or(le.leader_elect_resource_name);
        le.leader_elect_resource_namespace = f.resource_namespace.unwrap_or(le.leader_elect_resource_namespace);
    }
    le.overlay(flags, explicit);
    errs.extend(le.validate());

    let profiles = match file.profiles {
        None => vec![Profile::default_named(super::DEFAULT_SCHEDULER_NAME)],
        Some(list) if list.is_empty() => {
            errs.push("profiles: Required value".into());
            Vec::new()
        }
        Some(list) => {
            let mut out: Vec<Profile> = Vec::new();
            for (i, p) in list.into_iter().enumerate() {
                let name = p.scheduler_name.unwrap_or_else(|| super::DEFAULT_SCHEDULER_NAME.to_string());
                if name.is_empty() {
                    errs.push(format!("profiles[{i}].schedulerName: Required value"));
                }
                if let Some(j) = out.iter().position(|o| o.scheduler_name == name) {
                    errs.push(format!("profiles[{i}].schedulerName: Duplicate value: \"profiles[{j}].schedulerName\""));
                }
                if let Some(pc) = p.percentage_of_nodes_to_score.filter(|v| !(0..=100).contains(v)) {
                    errs.push(format!(
                        "profiles[{i}].percentageOfNodesToScore: Invalid value: {pc}: not in valid range [0-100]"
                    ));
                }
                match profile(&name, p.plugins.unwrap_or_default()) {
                    Ok(mut prof) => {
                        prof.percentage_of_nodes_to_score = p.percentage_of_nodes_to_score;
                        for pc in p.plugin_config.unwrap_or_default() {
                            if !DEFAULT_PLUGINS.iter().any(|(n, _)| *n == pc.name) {
                                errs.push(format!("profiles[{i}].pluginConfig: {:?} does not exist", pc.name));
                            } else {
                                tracing::warn!(profile = %name, plugin = %pc.name, "pluginConfig args are not applied by kaname yet; the plugin runs with upstream's default args");
                            }
                        }
                        out.push(prof);
                    }
                    Err(e) => errs.push(format!("profiles[{i}]: {e}")),
                }
            }
            out
        }
    };
    if !errs.is_empty() {
        return Err(errs.join(", "));
    }
    Ok(SchedulerConfiguration {
        kubeconfig: file.client_connection.and_then(|c| c.kubeconfig).filter(|k| !k.is_empty()).map(PathBuf::from),
        leader_election: le,
        percentage_of_nodes_to_score: percentage,
        pod_initial_backoff: Duration::from_secs(initial as u64),
        pod_max_backoff: Duration::from_secs(max as u64),
        profiles,
    })
}

/// Upstream's v1 plugin merging for one profile: the defaults (multiPoint), minus what
/// `disabled` lists name (`*`: all defaults) at multiPoint, filter or score, plus what
/// `enabled` lists add (a default enabled again keeps its place and takes the new weight).
fn profile(name: &str, plugins: PluginsFile) -> Result<Profile, String> {
    let known = |n: &str| DEFAULT_PLUGINS.iter().any(|(d, _)| *d == n);
    let mut plugins_on: Vec<String> = DEFAULT_PLUGINS.iter().map(|(n, _)| n.to_string()).collect();
    let mut scores: Vec<(String, i64)> =
        DEFAULT_PLUGINS.iter().filter(|(_, w)| *w > 0).map(|(n, w)| (n.to_string(), *w)).collect();
    let sets = [
        ("multiPoint", plugins.multi_point),
        ("filter", plugins.filter),
        ("preFilter", plugins.pre_filter),
        ("score", plugins.score),
        ("preScore", plugins.pre_score),
        ("postFilter", plugins.post_filter),
        ("queueSort", plugins.queue_sort),
        ("preEnqueue", plugins.pre_enqueue),
        ("reserve", plugins.reserve),
        ("permit", plugins.permit),
        ("preBind", plugins.pre_bind),
        ("bind", plugins.bind),
        ("postBind", plugins.post_bind),
    ];
    for (point, set) in sets {
        let Some(set) = set else { continue };
        for d in set.disabled.unwrap_or_default() {
            if d.name == "*" {
                match point {
                    "score" => scores.clear(),
                    "multiPoint" => {
                        plugins_on.clear();
                        scores.clear();
                    }
                    // Disabling every filter leaves the node filters off: refuse nothing, as
                    // upstream; the score list is unaffected.
                    _ => plugins_on.retain(|p| !point_has(point, p)),
                }
                continue;
            }
            if !known(&d.name) {
                return Err(format!("{:?} does not exist", d.name));
            }
            match point {
                "score" => scores.retain(|(n, _)| *n != d.name),
                "multiPoint" => {
                    plugins_on.retain(|n| *n != d.name);
                    scores.retain(|(n, _)| *n != d.name);
                }
                _ => plugins_on.retain(|n| *n != d.name || !point_has(point, n)),
            }
        }
        for e in set.enabled.unwrap_or_default() {
            if !known(&e.name) {
                return Err(format!("{:?} does not exist", e.name));
            }
            if !plugins_on.contains(&e.name) {
                plugins_on.push(e.name.clone());
            }
            let default_weight = DEFAULT_PLUGINS.iter().find(|(n, _)| *n == e.name).map_or(0, |(_, w)| *w);
            if matches!(point, "score" | "multiPoint") && default_weight > 0 {
                let w = e.weight.filter(|w| *w != 0).unwrap_or(default_weight);
                if w < 0 {
                    return Err(format!("score plugin {:?} should have a positive weight, got {w}", e.name));
                }
                match scores.iter_mut().find(|(n, _)| *n == e.name) {
                    Some(s) => s.1 = w,
                    None => scores.push((e.name.clone(), w)),
                }
            }
        }
    }
    let inert: Vec<&str> = plugins_on.iter().map(String::as_str).filter(|p| INERT_PLUGINS.contains(p)).collect();
    if !inert.is_empty() {
        tracing::info!(profile = %name, plugins = ?inert, "plugins kaname does not implement yet are enabled and do nothing");
    }
    Ok(Profile { scheduler_name: name.to_string(), percentage_of_nodes_to_score: None, plugins: plugins_on, scores })
}

/// Whether upstream's `plugin` implements extension point `point` (for the points where that
/// decides what a `disabled` entry removes).
fn point_has(point: &str, plugin: &str) -> bool {
    match point {
        "filter" | "preFilter" => matches!(
            plugin,
            "NodeUnschedulable"
                | "NodeName"
                | "TaintToleration"
                | "NodeAffinity"
                | "NodePorts"
                | "NodeResourcesFit"
                | "VolumeRestrictions"
                | "NodeVolumeLimits"
                | "VolumeBinding"
                | "VolumeZone"
                | "PodTopologySpread"
                | "InterPodAffinity"
        ),
        "postFilter" => plugin == "DefaultPreemption",
        "queueSort" => plugin == "PrioritySort",
        "bind" => plugin == "DefaultBinder",
        "preEnqueue" => plugin == "SchedulingGates",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        le: LeaderElectionFlags,
    }

    fn flags(args: &[&str]) -> LeaderElectionFlags {
        Cli::parse_from(std::iter::once("x").chain(args.iter().copied())).le
    }

    const HEAD: &str = "apiVersion: kubescheduler.config.k8s.io/v1\nkind: KubeSchedulerConfiguration\n";

    #[test]
    fn defaults_and_upstream_precedence() {
        let c = parse(HEAD, &flags(&[]), &[]).unwrap();
        assert_eq!(c.profiles, vec![Profile::default_named("default-scheduler")]);
        assert_eq!(c.leader_election.leader_elect_resource_name.as_deref(), Some("kube-scheduler"));
        assert_eq!((c.pod_initial_backoff, c.pod_max_backoff), (Duration::from_secs(1), Duration::from_secs(10)));
        let text = format!("{HEAD}clientConnection:\n  kubeconfig: /etc/kubernetes/scheduler.conf\nleaderElection:\n  leaseDuration: 30s\n  resourceName: my-scheduler\n");
        // A flag set on the command line wins; one left at its default does not.
        let f = flags(&["--leader-elect-renew-deadline=20s"]);
        let c = parse(&text, &f, &["leader_elect_renew_deadline".into()]).unwrap();
        assert_eq!(c.kubeconfig.as_deref(), Some(Path::new("/etc/kubernetes/scheduler.conf")));
        assert_eq!(c.leader_election.leader_elect_lease_duration, Duration::from_secs(30));
        assert_eq!(c.leader_election.leader_elect_renew_deadline, Duration::from_secs(20));
        assert_eq!(c.leader_election.leader_elect_resource_name.as_deref(), Some("my-scheduler"));
    }

    #[test]
    fn profiles_and_plugins_merge_as_upstream() {
        let text = format!(
            "{HEAD}profiles:\n- schedulerName: default-scheduler\n- schedulerName: no-scoring\n  plugins:\n    score:\n      disabled:\n      - name: '*'\n      enabled:\n      - name: NodeResourcesFit\n        weight: 5\n    filter:\n      disabled:\n      - name: TaintToleration\n"
        );
        let c = parse(&text, &flags(&[]), &[]).unwrap();
        assert_eq!(c.profiles.len(), 2);
        let p = &c.profiles[1];
        assert_eq!(p.scores, vec![("NodeResourcesFit".to_string(), 5)]);
        assert!(!p.enabled("TaintToleration") && p.enabled("NodeAffinity"));
    }

    #[test]
    fn bad_files_get_upstream_errors() {
        let e = |t: &str| parse(t, &flags(&[]), &[]).unwrap_err();
        assert_eq!(
            e("apiVersion: kubescheduler.config.k8s.io/v1beta2\nkind: KubeSchedulerConfiguration\n"),
            "no kind \"KubeSchedulerConfiguration\" is registered for version \"kubescheduler.config.k8s.io/v1beta2\" in scheme"
        );
        assert_eq!(e(&format!("{HEAD}foo: 1\n")), "strict decoding error: unknown field \"foo\"");
        assert_eq!(
            e(&format!("{HEAD}profiles:\n- schedulerName: a\n  plugin: {{}}\n")),
            "strict decoding error: unknown field \"profiles[0].plugin\""
        );
        assert_eq!(
            e(&format!("{HEAD}percentageOfNodesToScore: 101\npodInitialBackoffSeconds: 0\n")),
            "percentageOfNodesToScore: Invalid value: 101: not in valid range [0-100], podInitialBackoffSeconds: Invalid value: 0: must be greater than 0"
        );
        assert_eq!(
            e(&format!("{HEAD}profiles:\n- schedulerName: a\n- schedulerName: a\n")),
            "profiles[1].schedulerName: Duplicate value: \"profiles[0].schedulerName\""
        );
        assert_eq!(
            e(&format!("{HEAD}profiles:\n- plugins:\n    filter:\n      enabled:\n      - name: Foo\n")),
            "profiles[0]: \"Foo\" does not exist"
        );
        assert_eq!(
            e(&format!("{HEAD}leaderElection:\n  leaseDuration: 5s\n  renewDeadline: 10s\n")),
            "leaderElection.leaseDuration: Invalid value: 10s: LeaseDuration must be greater than RenewDeadline"
        );
    }
}
