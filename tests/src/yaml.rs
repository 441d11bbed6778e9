//! The configuration most tests need: one outbound listener, one service with one route to one backend. Options
//! cover what tests vary; anything else is spliced in as YAML.

use std::net::SocketAddr;

/// Builder for a one-service, one-backend config. Listener and admin bind `127.0.0.1:0`.
#[derive(Clone, Debug)]
pub struct OneBackend {
    service: String,
    hosts: Vec<String>,
    endpoints: Vec<String>,
    protocol: String,
    route_extra: String,
    limits: String,
}

/// Service `service` (answering to its own name) whose route `default` goes to backend `web` at `endpoints`.
pub fn one_backend(service: &str, endpoints: &[SocketAddr]) -> OneBackend {
    OneBackend {
        service: service.to_owned(),
        hosts: vec![service.to_owned()],
        endpoints: endpoints.iter().map(ToString::to_string).collect(),
        protocol: "auto".to_owned(),
        route_extra: String::new(),
        limits: String::new(),
    }
}

impl OneBackend {
    /// More host names for the service.
    pub fn host(mut self, host: &str) -> Self {
        self.hosts.push(host.to_owned());
        self
    }

    /// An endpoint given as text (e.g. a DNS name).
    pub fn endpoint(mut self, endpoint: &str) -> Self {
        self.endpoints.push(endpoint.to_owned());
        self
    }

    /// `http1`, `http2` or `auto` (the default).
    pub fn protocol(mut self, protocol: &str) -> Self {
        self.protocol = protocol.to_owned();
        self
    }

    /// Extra keys of the route, e.g. `timeout: 200ms`, one per line (indentation is added).
    pub fn route(mut self, yaml: &str) -> Self {
        self.route_extra = indent(yaml, 8);
        self
    }

    /// Keys of `limits`, e.g. `max_header_count: 20`, one per line (indentation is added).
    pub fn limits(mut self, yaml: &str) -> Self {
        self.limits = indent(yaml, 2);
        self
    }

    pub fn build(&self) -> String {
        let hosts = self.hosts.join(", ");
        let endpoints = self.endpoints.iter().map(|e| format!("\"{e}\"")).collect::<Vec<_>>().join(", ");
        format!(
            "admin: {{ address: \"127.0.0.1:0\" }}\nlimits:\n  connect_timeout: 500ms\n{limits}\nlisteners:\n  - {{ name: outbound, address: \"127.0.0.1:0\", direction: outbound }}\nservices:\n  - name: {service}\n    hosts: [{hosts}]\n    routes:\n      - name: default\n{route}\n        backends: [{{ name: web }}]\nbackends:\n  - {{ name: web, endpoints: [{endpoints}], protocol: {protocol} }}\n",
            limits = self.limits,
            service = self.service,
            route = self.route_extra,
            protocol = self.protocol,
        )
    }
}

impl From<OneBackend> for String {
    fn from(b: OneBackend) -> String {
        b.build()
    }
}

fn indent(yaml: &str, n: usize) -> String {
    let pad = " ".repeat(n);
    yaml.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| format!("{pad}{}\n", l.trim()))
        .collect::<String>()
        .trim_end()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_a_valid_config() {
        let addr: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let yaml = one_backend("svc", &[addr])
            .host("svc.local")
            .endpoint("localhost:9")
            .protocol("http2")
            .route("timeout: 200ms")
            .limits("max_header_count: 20\nidle_timeout: 5s")
            .build();
        let snapshot = attache_config::load_str(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let route = &snapshot.services[0].routes[0];
        assert_eq!(route.timeout, std::time::Duration::from_millis(200));
        assert_eq!(snapshot.limits.max_header_count, 20);
        assert_eq!(snapshot.backends["web"].endpoints.len(), 2);
    }
}
