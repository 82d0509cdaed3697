//! The variables Kubernetes sets for Services: no options, as in Centrifugo.

/// Whether a variable (`name` without its prefix) is one Kubernetes sets for a Service named
/// like the prefix (`centrifugo`, `centrifugo-internal`, ...) rather than an option: as
/// Centrifugo, names `[<SUFFIX>_]PORT...` and `[<SUFFIX>_]SERVICE_...` are skipped when they are
/// no option (`PORT_8000_TCP_ADDR`, `SERVICE_HOST`) or hold a service link
/// (`PORT=tcp://10.0.0.1:8000` next to the v5 `port` option, `INTERNAL_PORT=tcp://...`).
pub(super) fn is_service_link(name: &str, raw: &str) -> bool {
    let parts: Vec<&str> = name.split('_').collect();
    let k8s_name = parts.iter().enumerate().any(|(i, p)| {
        *p == "PORT" || (*p == "SERVICE" && i + 1 < parts.len() && matches!(parts[i + 1], "HOST" | "PORT"))
    });
    if !k8s_name {
        return false;
    }
    let link = ["tcp://", "udp://", "sctp://"].iter().any(|scheme| {
        raw.strip_prefix(scheme)
            .and_then(|a| a.rsplit_once(':'))
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    });
    let kubernetes_only = name.starts_with("SERVICE_HOST")
        || name.starts_with("SERVICE_PORT")
        || name.contains("_SERVICE_HOST")
        || name.contains("_SERVICE_PORT")
        || parts
            .windows(3)
            .any(|w| w[0] == "PORT" && w[1].parse::<u16>().is_ok() && matches!(w[2], "TCP" | "UDP" | "SCTP"));
    link || kubernetes_only
}

#[cfg(test)]
mod tests {
    use super::super::{load, LoadOptions};

    fn env(vars: &[(&str, &str)]) -> LoadOptions {
        LoadOptions { env: vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), ..Default::default() }
    }

    /// What Kubernetes sets for Services `centrifugo`, `centrifugo-internal`,
    /// `centrifugo-grpc-api` and `centrifugo-uni-grpc` (the Helm chart's) is no option.
    #[test]
    fn kubernetes_service_links_are_not_options() {
        let mut vars = vec![
            ("CENTRIFUGO_PORT", "tcp://10.0.0.1:8000"),
            ("CENTRIFUGO_PORT_8000_TCP", "tcp://10.0.0.1:8000"),
            ("CENTRIFUGO_PORT_8000_TCP_PROTO", "tcp"),
            ("CENTRIFUGO_PORT_8000_TCP_PORT", "8000"),
            ("CENTRIFUGO_PORT_8000_TCP_ADDR", "10.0.0.1"),
            ("CENTRIFUGO_SERVICE_HOST", "10.0.0.1"),
            ("CENTRIFUGO_SERVICE_PORT", "8000"),
            ("CENTRIFUGO_SERVICE_PORT_EXTERNAL", "8000"),
            ("CENTRIFUGO_INTERNAL_PORT", "tcp://10.0.0.2:9000"),
            ("CENTRIFUGO_INTERNAL_PORT_9000_TCP_PORT", "9000"),
            ("CENTRIFUGO_INTERNAL_SERVICE_HOST", "10.0.0.2"),
            ("CENTRIFUGO_GRPC_API_PORT", "tcp://10.0.0.3:10000"),
            ("CENTRIFUGO_GRPC_API_SERVICE_PORT_GRPC", "10000"),
            ("CENTRIFUGO_UNI_GRPC_PORT", "tcp://10.0.0.4:11000"),
            ("CENTRIFUGO_UNI_GRPC_SERVICE_HOST", "10.0.0.4"),
        ];
        let l = load(&env(&vars)).unwrap();
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        let c = &l.config;
        assert_eq!((c.http_server.port, c.http_server.internal_port.as_str()), (8000, ""));
        assert_eq!((c.grpc_api.port, c.uni_grpc.port), (10000, 11000));
        // Real values of the same names still apply; a bad one is still an error.
        vars.extend([("CENTRIFUGO_INTERNAL_PORT", "9100"), ("GYRE_PORT", "8100")]);
        let c = load(&env(&vars)).unwrap().config;
        assert_eq!((c.http_server.port, c.http_server.internal_port.as_str()), (8100, "9100"));
        assert!(load(&env(&[("CENTRIFUGO_PORT", "tcp:10.0.0.1")])).is_err());
        let e = load(&env(&[("CENTRIFUGO_INTERNAL_PORT", "x")])).unwrap_err().message;
        assert!(e.contains("http_server.internal_port"), "{e}");
    }
}
