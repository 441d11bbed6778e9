use super::expect_error;
use crate::load_str;
use crate::model::ExporterKind;

#[test]
fn defaults_propagate_w3c_sample_everything_and_export_nothing() {
    let snapshot = load_str("{}").unwrap_or_else(|e| panic!("{e}"));
    let t = &snapshot.tracing;
    assert_eq!(&*t.service_name, "attache-proxy");
    assert!((t.sampling - 1.0).abs() < f64::EPSILON);
    assert!(t.propagation.w3c && !t.propagation.b3 && !t.propagation.b3multi);
    assert_eq!(t.max_request_id_length, 128);
    assert!(t.exporters.is_empty());
}

#[test]
fn exporters_get_the_collectors_usual_path() {
    let yaml = "tracing:\n  otlp: {endpoint: 'http://127.0.0.1:4318'}\n  zipkin: {endpoint: 'http://zipkin.local:9411/custom'}\n";
    let snapshot = load_str(yaml).unwrap_or_else(|e| panic!("{e}"));
    let e = &snapshot.tracing.exporters;
    assert_eq!(
        (e[0].kind, e[0].authority.as_str(), e[0].path.as_str()),
        (ExporterKind::Otlp, "127.0.0.1:4318", "/v1/traces")
    );
    assert_eq!(
        (e[1].kind, e[1].authority.as_str(), e[1].path.as_str()),
        (ExporterKind::Zipkin, "zipkin.local:9411", "/custom")
    );
    assert_eq!((e[0].max_batch, e[0].queue), (512, 2048));
}

#[test]
fn sampling_is_a_fraction() {
    expect_error("tracing:\n  sampling: 1.5\n", "tracing.sampling", (2, 3), "0.0 to 1.0");
    expect_error("tracing:\n  sampling: -0.1\n", "tracing.sampling", (2, 3), "0.0 to 1.0");
}

#[test]
fn propagation_needs_a_form() {
    expect_error("tracing:\n  propagation: []\n", "tracing.propagation", (2, 3), "at least one");
}

#[test]
fn endpoints_are_plain_http_with_a_port() {
    expect_error("tracing:\n  otlp:\n    endpoint: https://c:4318\n", "tracing.otlp.endpoint", (3, 5), "https");
    expect_error("tracing:\n  zipkin:\n    endpoint: http://zipkin\n", "tracing.zipkin.endpoint", (3, 5), "port");
    expect_error("tracing:\n  otlp:\n    endpoint: 127.0.0.1:4318\n", "tracing.otlp.endpoint", (3, 5), "http://");
}

#[test]
fn exporter_bounds_and_durations_are_checked() {
    let yaml = "tracing:\n  otlp:\n    endpoint: http://127.0.0.1:4318\n    queue: 0\n    flush_interval: 0s\n";
    expect_error(yaml, "tracing.otlp.queue", (4, 5), "out of range");
    expect_error(yaml, "tracing.otlp.flush_interval", (5, 5), "");
}

#[test]
fn request_id_bound_is_sane() {
    expect_error("tracing:\n  max_request_id_length: 4\n", "tracing.max_request_id_length", (2, 3), "16 to 1024");
}
