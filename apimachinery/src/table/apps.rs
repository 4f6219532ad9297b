//! Workload printers: pod templates, controllers and batch kinds.

use serde_json::{Value, json};

use super::time::{human_duration, parse_rfc3339, since};
use super::util::{
    arr_at, condition, containers_images, format_label_selector, int_at, is_set, map_at, opt_int,
    str_at,
};
use super::{AGE, CONTAINERS_DESC, Cell, Col, IMAGES_DESC, NAME, col, wide};
use crate::selector::{LabelSelector, format_labels};

/// A template's pod spec lives at a kind-specific path.
fn containers_at(obj: &Value, spec_ptr: &str) -> Value {
    json!(containers_images(obj.pointer(spec_ptr)).0)
}

fn images_at(obj: &Value, spec_ptr: &str) -> Value {
    json!(containers_images(obj.pointer(spec_ptr)).1)
}

fn containers(obj: &Value, _: i64) -> Value {
    containers_at(obj, "/spec/template/spec")
}

fn images(obj: &Value, _: i64) -> Value {
    images_at(obj, "/spec/template/spec")
}

fn selector(obj: &Value, _: i64) -> Value {
    json!(format_label_selector(obj.pointer("/spec/selector")))
}

/// `spec.replicas`, which defaulting sets to 1.
fn desired(obj: &Value) -> i64 {
    opt_int(obj, "/spec/replicas").unwrap_or(1)
}

const CONTAINERS: Col = wide(
    "Containers",
    "string",
    CONTAINERS_DESC,
    Cell::Fn(containers),
);
const IMAGES: Col = wide("Images", "string", IMAGES_DESC, Cell::Fn(images));
const SELECTOR: Col = wide(
    "Selector",
    "string",
    "Label query over pods that should match the replica count.",
    Cell::Fn(selector),
);

pub(super) const POD_TEMPLATE: &[Col] = &[
    NAME,
    col(
        "Containers",
        "string",
        CONTAINERS_DESC,
        Cell::Fn(|o, _| containers_at(o, "/template/spec")),
    ),
    col(
        "Images",
        "string",
        IMAGES_DESC,
        Cell::Fn(|o, _| images_at(o, "/template/spec")),
    ),
    col(
        "Pod Labels",
        "string",
        "The labels for the pod template.",
        Cell::Fn(|o, _| json!(format_labels(map_at(o, "/template/metadata/labels")))),
    ),
];

pub(super) const REPLICATION_CONTROLLER: &[Col] = &[
    NAME,
    col(
        "Desired",
        "integer",
        "Replicas is the number of desired replicas.",
        Cell::Fn(|o, _| json!(desired(o))),
    ),
    col(
        "Current",
        "integer",
        "Replicas is the most recently observed number of replicas.",
        Cell::Int("/status/replicas"),
    ),
    col(
        "Ready",
        "integer",
        "The number of ready replicas for this replication controller.",
        Cell::Int("/status/readyReplicas"),
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    wide(
        "Selector",
        "string",
        "Selector is a label query over pods that should match the Replicas count.",
        Cell::Fn(|o, _| json!(format_labels(map_at(o, "/spec/selector")))),
    ),
];

pub(super) const DEPLOYMENT: &[Col] = &[
    NAME,
    col(
        "Ready",
        "string",
        "Number of the pod with ready state",
        Cell::Fn(|o, _| {
            json!(format!(
                "{}/{}",
                int_at(o, "/status/readyReplicas"),
                desired(o)
            ))
        }),
    ),
    col(
        "Up-to-date",
        "string",
        "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
        Cell::Int("/status/updatedReplicas"),
    ),
    col(
        "Available",
        "string",
        "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
        Cell::Int("/status/availableReplicas"),
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    // Deployments print `selector.String()` itself: "" for everything.
    wide(
        "Selector",
        "string",
        "Label selector for pods.",
        Cell::Fn(|o, _| {
            let sel = o.pointer("/spec/selector").unwrap_or(&Value::Null);
            json!(match LabelSelector::from_label_selector_json(sel) {
                Ok(s) => s.to_string(),
                Err(_) => "<invalid>".into(),
            })
        }),
    ),
];

pub(super) const REPLICA_SET: &[Col] = &[
    NAME,
    col(
        "Desired",
        "integer",
        "Replicas is the number of desired replicas.",
        Cell::Fn(|o, _| json!(desired(o))),
    ),
    col(
        "Current",
        "integer",
        "Replicas is the most recently observed number of replicas.",
        Cell::Int("/status/replicas"),
    ),
    col(
        "Ready",
        "integer",
        "The number of ready replicas for this replica set.",
        Cell::Int("/status/readyReplicas"),
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

pub(super) const STATEFUL_SET: &[Col] = &[
    NAME,
    col(
        "Ready",
        "string",
        "Number of the pod with ready state",
        Cell::Fn(|o, _| {
            json!(format!(
                "{}/{}",
                int_at(o, "/status/readyReplicas"),
                desired(o)
            ))
        }),
    ),
    AGE,
    CONTAINERS,
    IMAGES,
];

pub(super) const DAEMON_SET: &[Col] = &[
    NAME,
    col(
        "Desired",
        "integer",
        "The total number of nodes that should be running the daemon pod.",
        Cell::Int("/status/desiredNumberScheduled"),
    ),
    col(
        "Current",
        "integer",
        "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod.",
        Cell::Int("/status/currentNumberScheduled"),
    ),
    col(
        "Ready",
        "integer",
        "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready.",
        Cell::Int("/status/numberReady"),
    ),
    col(
        "Up-to-date",
        "integer",
        "The total number of nodes that are running updated daemon pod",
        Cell::Int("/status/updatedNumberScheduled"),
    ),
    col(
        "Available",
        "integer",
        "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available.",
        Cell::Int("/status/numberAvailable"),
    ),
    col(
        "Node Selector",
        "string",
        "NodeSelector is a selector which must be true for the pod to fit on a node.",
        Cell::Fn(|o, _| json!(format_labels(map_at(o, "/spec/template/spec/nodeSelector")))),
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

pub(super) const CONTROLLER_REVISION: &[Col] = &[
    NAME,
    col(
        "Controller",
        "string",
        "Controller of the object",
        Cell::Fn(revision_controller),
    ),
    col(
        "Revision",
        "string",
        "Revision indicates the revision of the state represented by Data.",
        Cell::Int("/revision"),
    ),
    AGE,
];

/// `statefulset.apps/web`-style name of the controlling owner.
fn revision_controller(obj: &Value, _: i64) -> Value {
    let owner = arr_at(obj, "/metadata/ownerReferences")
        .iter()
        .find(|r| r.get("controller").and_then(Value::as_bool) == Some(true));
    let Some(owner) = owner else {
        return json!("<none>");
    };
    let api_version = str_at(owner, "/apiVersion");
    let group = api_version.split_once('/').map(|(g, _)| g).unwrap_or("");
    let kind = str_at(owner, "/kind");
    let name = str_at(owner, "/name");
    let group_kind = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    if group_kind.is_empty() {
        return json!(name);
    }
    json!(format!("{}/{name}", group_kind.to_lowercase()))
}

pub(super) const JOB: &[Col] = &[
    NAME,
    col(
        "Status",
        "string",
        "Status of the job.",
        Cell::Fn(job_status),
    ),
    col(
        "Completions",
        "string",
        "The number of pods which reached phase Succeeded.",
        Cell::Fn(job_completions),
    ),
    col(
        "Duration",
        "string",
        "Time required to complete the job.",
        Cell::Fn(job_duration),
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

/// Upstream's `hasJobCondition`: the first condition of the type decides.
fn job_condition(job: &Value, ty: &str) -> bool {
    condition(job, "/status/conditions", ty).is_some_and(|c| str_at(c, "/status") == "True")
}

fn job_status(job: &Value, _: i64) -> Value {
    let s = if job_condition(job, "Complete") {
        "Complete"
    } else if job_condition(job, "Failed") {
        "Failed"
    } else if is_set(job, "/metadata/deletionTimestamp") {
        "Terminating"
    } else if job_condition(job, "Suspended") {
        "Suspended"
    } else if job_condition(job, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    };
    json!(s)
}

fn job_completions(job: &Value, _: i64) -> Value {
    let succeeded = int_at(job, "/status/succeeded");
    let text = match opt_int(job, "/spec/completions") {
        Some(c) => format!("{succeeded}/{c}"),
        None => match opt_int(job, "/spec/parallelism").unwrap_or(0) {
            p if p > 1 => format!("{succeeded}/1 of {p}"),
            _ => format!("{succeeded}/1"),
        },
    };
    json!(text)
}

fn job_duration(job: &Value, now: i64) -> Value {
    let start = parse_rfc3339(str_at(job, "/status/startTime"));
    let end = parse_rfc3339(str_at(job, "/status/completionTime"));
    let text = match (start, end) {
        (None, _) => String::new(),
        (Some(s), None) => human_duration(now.saturating_sub(s)),
        (Some(s), Some(e)) => human_duration(e.saturating_sub(s)),
    };
    json!(text)
}

const JOB_SPEC: &str = "/spec/jobTemplate/spec/template/spec";

pub(super) const CRON_JOB: &[Col] = &[
    NAME,
    col(
        "Schedule",
        "string",
        "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron.",
        Cell::Str("/spec/schedule"),
    ),
    col(
        "Timezone",
        "string",
        "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones.",
        Cell::Fn(|o, _| {
            json!(
                o.pointer("/spec/timeZone")
                    .and_then(Value::as_str)
                    .unwrap_or("<none>")
            )
        }),
    ),
    col(
        "Suspend",
        "boolean",
        "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions.",
        Cell::Fn(|o, _| {
            json!(match o.pointer("/spec/suspend").and_then(Value::as_bool) {
                Some(true) => "True",
                Some(false) => "False",
                None => "<unset>",
            })
        }),
    ),
    col(
        "Active",
        "integer",
        "A list of pointers to currently running jobs.",
        Cell::Len("/status/active"),
    ),
    col(
        "Last Schedule",
        "string",
        "Information when was the last time the job was successfully scheduled.",
        Cell::Fn(|o, now| match o.pointer("/status/lastScheduleTime") {
            Some(t) if !t.is_null() => json!(since(Some(t), now)),
            _ => json!("<none>"),
        }),
    ),
    AGE,
    wide(
        "Containers",
        "string",
        CONTAINERS_DESC,
        Cell::Fn(|o, _| containers_at(o, JOB_SPEC)),
    ),
    wide(
        "Images",
        "string",
        IMAGES_DESC,
        Cell::Fn(|o, _| images_at(o, JOB_SPEC)),
    ),
    wide(
        "Selector",
        "string",
        "A label query over pods that should match the pod count.",
        Cell::Fn(|o, _| {
            json!(format_label_selector(
                o.pointer("/spec/jobTemplate/spec/selector")
            ))
        }),
    ),
];
