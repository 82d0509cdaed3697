use std::time::Duration;

use super::*;

/// Every sample line of `text` is `name{labels} value` or `name value`, and every family's
/// samples follow its own `# HELP` and `# TYPE` lines, each family declared once.
fn assert_well_formed(text: &str) {
    let mut declared = std::collections::HashSet::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a kind");
            assert!(["counter", "gauge", "summary", "histogram"].contains(&kind), "{line}");
            assert!(declared.insert(name.to_string()), "{name} declared twice");
            current = name.to_string();
            continue;
        }
        if line.starts_with("# HELP ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        value.parse::<f64>().unwrap_or_else(|_| panic!("bad value in {line:?}"));
        let name = series.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| *f == current))
            .unwrap_or(name);
        assert_eq!(family, current, "sample {line:?} outside its family");
        if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
            assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
        }
    }
}

#[test]
fn snapshots_add_up_and_render() {
    message_sent(Kind::Publication);
    message_received(Kind::Join);
    frames_sent(0, Frame::PushPublication, 3, 30);
    frames_sent(2, Frame::PushPublication, 1, 7);
    frames_sent(0, Frame::Subscribe, 1, 40);
    frame_received(2, Frame::Connect, 5);
    api_command(Protocol::Http, Method::Publish, Duration::from_micros(300), None);
    api_command(Protocol::Grpc, Method::History, Duration::from_millis(2), Some(108));
    client_reply_error("subscribe", 103);
    client_command(Frame::Connect, Duration::from_micros(700));
    ping_pong(0, Duration::from_millis(3));
    server_disconnect(3008);
    server_disconnect(3000);
    server_unsubscribe(2500);
    outgoing_close(0, 3008);
    let web = ClientLabels::of("js", "");
    connection_accepted(0, web);
    subscription_accepted(Some(web));
    subscription_removed(Some(web), 1);
    recover(true, false);
    connection_limit_reached();
    let mut a = snapshot(0);
    a.num_clients = 2;
    a.users = vec!["u".into()];
    // The second worker: the same thread's counters again, and the connection ends there.
    connection_closed(0, web);
    let mut b = snapshot(1);
    b.num_clients = 1;
    b.users = vec!["u".into(), "v".into()];
    a.add(b);
    assert_eq!(a.frames_delivered(), 8);
    let text = a.render("0.1.0 OSS", 1);
    assert_well_formed(&text);
    for line in [
        "centrifugo_node_num_clients 3",
        "centrifugo_node_num_users 2",
        "centrifugo_node_messages_sent_count{type=\"publication\"} 2",
        "centrifugo_node_messages_received_count{type=\"join\"} 2",
        "centrifugo_node_client_connection_limit 2",
        "centrifugo_transport_messages_sent{transport=\"websocket\",frame_type=\"push_publication\"} 6",
        "centrifugo_transport_messages_sent_size{transport=\"websocket\",frame_type=\"push_publication\"} 60",
        "centrifugo_transport_messages_sent{transport=\"websocket\",frame_type=\"push_join\"} 0",
        "centrifugo_transport_messages_sent{transport=\"websocket\",frame_type=\"subscribe\"} 2",
        "centrifugo_transport_messages_sent{transport=\"sse\",frame_type=\"push_publication\"} 2",
        "centrifugo_transport_messages_received{transport=\"sse\",frame_type=\"connect\"} 2",
        "centrifugo_transport_messages_received_size{transport=\"sse\",frame_type=\"connect\"} 10",
        "centrifugo_transport_outgoing_close_count{transport=\"websocket\",code=\"3008\"} 2",
        "centrifugo_api_command_duration_seconds_count{protocol=\"http\",method=\"publish\"} 2",
        "centrifugo_api_command_duration_seconds_histogram_bucket{protocol=\"http\",method=\"publish\",le=\"0.0005\"} 2",
        "centrifugo_api_command_errors_total{protocol=\"grpc\",method=\"history\",error=\"108\"} 2",
        "centrifugo_client_num_reply_errors{method=\"subscribe\",code=\"103\"} 2",
        "centrifugo_client_command_duration_seconds_count{method=\"connect\"} 2",
        "centrifugo_client_command_duration_seconds_histogram_bucket{method=\"connect\",le=\"0.0005\"} 0",
        "centrifugo_client_command_duration_seconds_histogram_bucket{method=\"connect\",le=\"0.001\"} 2",
        "centrifugo_client_command_duration_seconds_histogram_bucket{method=\"connect\",le=\"+Inf\"} 2",
        "centrifugo_client_num_server_disconnects{code=\"3008\"} 2",
        "centrifugo_client_num_server_unsubscribes{code=\"2500\"} 2",
        "centrifugo_client_connections_accepted{transport=\"websocket\",client_name=\"unregistered\",client_version=\"unversioned\"} 2",
        "centrifugo_client_connections_inflight{transport=\"websocket\",client_name=\"unregistered\",client_version=\"unversioned\"} 1",
        "centrifugo_client_subscriptions_accepted{client_name=\"unregistered\"} 2",
        "centrifugo_client_subscriptions_inflight{client_name=\"unregistered\"} 0",
        "centrifugo_client_recover{recovered=\"yes\",has_recovered_publications=\"no\"} 2",
        "centrifugo_client_ping_pong_duration_seconds_bucket{transport=\"websocket\",le=\"0.005\"} 2",
        "centrifugo_client_ping_pong_duration_seconds_count{transport=\"websocket\"} 2",
        "gyre_worker_loop_inbox_batches_total{worker=\"1\"} 0",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in:\n{text}");
    }
    // Closed connections (3000) are not server disconnects; untouched series stay out.
    assert!(!text.contains("code=\"3000\""), "{text}");
    assert!(!text.contains("transport=\"uni_sse\""), "{text}");
    assert!(!text.contains("frame_type=\"push_message\""), "{text}");
}

#[test]
fn an_idle_node_declares_every_family() {
    let text = Snapshot::default().render("v", 1);
    assert_well_formed(&text);
    for family in [
        "centrifugo_transport_outgoing_close_count",
        "centrifugo_client_num_server_disconnects",
        "centrifugo_client_command_duration_seconds_histogram",
        "centrifugo_client_connections_accepted",
        "centrifugo_client_connections_inflight",
        "centrifugo_client_recover",
        "centrifugo_proxy_inflight_requests",
    ] {
        assert!(text.contains(&format!("# TYPE {family} ")), "{family} missing:\n{text}");
    }
}

#[test]
fn client_labels_follow_name_and_version() {
    let names = |name: &str, version: &str| {
        let c = ClientLabels::of(name, version);
        (CLIENT_NAMES[c.name()], CLIENT_VERSIONS[c.0 as usize % 2])
    };
    assert_eq!(names("", ""), ("unnamed", "unversioned"));
    assert_eq!(names("js", "5.0.0"), ("unregistered", "unregistered"));
    assert_eq!(names("", "1"), ("unnamed", "unregistered"));
}
