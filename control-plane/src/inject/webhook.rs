//! The mutating admission webhook (`POST /inject`, AdmissionReview v1): the same injection as `attache inject`,
//! applied to each Pod as it is created, answered with a JSON patch. It never denies: a pod it cannot or should not
//! inject is allowed unchanged (pair it with `failurePolicy: Ignore`).

use base64::Engine as _;
use serde_json::{json, Value as Json};

use super::{inject_value, InjectOptions, Outcome};

/// The AdmissionReview answer to `body`, or why `body` is not an AdmissionReview.
pub fn review(body: &[u8], opts: &InjectOptions) -> Result<Json, String> {
    let review: Json = serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let request = review.get("request").ok_or("an AdmissionReview with a `request` is expected")?;
    let uid = request.get("uid").and_then(Json::as_str).ok_or("the request has no `uid`")?;
    let mut response = json!({ "uid": uid, "allowed": true });
    if let Some(patch) = request.get("object").and_then(|pod| patch_for(pod, opts)) {
        let encoded = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
        response["patchType"] = json!("JSONPatch");
        response["patch"] = json!(encoded);
    }
    let api_version = review.get("apiVersion").cloned().unwrap_or_else(|| json!("admission.k8s.io/v1"));
    Ok(json!({ "apiVersion": api_version, "kind": "AdmissionReview", "response": response }))
}

/// The JSON patch that injects `pod`, when it is a Pod to inject.
fn patch_for(pod: &Json, opts: &InjectOptions) -> Option<Json> {
    if pod.get("kind").and_then(Json::as_str) != Some("Pod") {
        return None;
    }
    let mut value: serde_yaml::Value = serde_yaml::to_value(pod).ok()?;
    // Pods of a controller have only `generateName` yet: that names the workload when no label does.
    if let Some(meta) = value.get_mut("metadata").and_then(serde_yaml::Value::as_mapping_mut) {
        if !meta.contains_key("name") {
            if let Some(generated) = meta.get("generateName").and_then(serde_yaml::Value::as_str) {
                let name = generated.trim_end_matches('-').to_owned();
                meta.insert("name".into(), name.into());
            }
        }
    }
    let mut report = Vec::new();
    inject_value(&mut value, opts, &mut report);
    if report.first().map(|(_, o)| *o) != Some(Outcome::Injected) {
        return None;
    }
    let injected: Json = serde_json::to_value(&value).ok()?;
    // `add` replaces a member that exists: the whole spec, and the annotations with the injection marker.
    Some(json!([
        { "op": "add", "path": "/spec", "value": injected["spec"] },
        { "op": "add", "path": "/metadata/annotations", "value": injected["metadata"]["annotations"] },
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> InjectOptions {
        InjectOptions { image: "img".into(), control_plane: "cp:7070".into(), proxy_uid: 1337 }
    }

    fn pod(annotations: Json) -> Vec<u8> {
        json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
                "object": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": { "generateName": "web-7d4b9c-", "labels": { "app": "web" }, "annotations": annotations },
                    "spec": { "containers": [ { "name": "web", "image": "web:1", "ports": [ { "containerPort": 8080 } ] } ] }
                }
            }
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_pod_is_answered_with_a_patch_that_adds_the_sidecar() {
        let answer = review(&pod(json!({})), &opts()).unwrap_or_else(|e| panic!("{e}"));
        let response = &answer["response"];
        assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
        assert_eq!(response["allowed"], true);
        assert_eq!(response["patchType"], "JSONPatch");
        let patch = base64::engine::general_purpose::STANDARD
            .decode(response["patch"].as_str().unwrap_or_default())
            .unwrap_or_default();
        let patch: Json = serde_json::from_slice(&patch).unwrap_or_default();
        assert_eq!(patch[0]["path"], "/spec");
        let init = &patch[0]["value"]["initContainers"];
        assert_eq!(init[0]["name"], "attache-init");
        assert_eq!(init[1]["name"], "attache-proxy");
        assert_eq!(init[1]["restartPolicy"], "Always");
        assert_eq!(patch[1]["value"]["attache.dev/injected"], env!("CARGO_PKG_VERSION"));
    }

    #[test]
    fn an_opted_out_pod_and_other_objects_are_allowed_unchanged() {
        let answer =
            review(&pod(json!({ "attache.dev/inject": "disabled" })), &opts()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(answer["response"]["allowed"], true);
        assert!(answer["response"].get("patch").is_none());
        assert!(review(b"{}", &opts()).is_err());
        assert!(review(b"not json", &opts()).is_err());
    }
}
