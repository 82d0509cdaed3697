//! The integration tests: each test starts the real `gyre` binary on its own port.
//!
//! * `api`    — new-style `POST /api/<method>`: every method's success and error shapes.
//! * `auth`   — API key checks.
//! * `config_audit` — every Centrifugo v6 option is applied or reported as not supported.
//! * `container` — the image's health check script, the compose file's environment (two nodes
//!   on one Redis), the Dockerfile's layout.
//! * `deploy` — the Helm chart's command lines (v6, v5) with Kubernetes' variables, the
//!   internal port's split of the endpoints, SIGHUP.
//! * `examples` — the README's quick start as written, and `examples/browser.html` in Chromium.
//! * `logs`   — the log's JSON lines, `log.file`, and the lines that explain refusals.
//! * `legacy` — legacy `POST /api` streams, including a 1,000,000-command request.
//! * `legacy_protocol` — Centrifugo 2.x/3.x clients (`centrifuge` 2.8.5, `sockjs-client` 1.6.1)
//!   over WebSocket (JSON, protobuf) and SockJS (websocket, xhr-streaming, xhr-polling).
//! * `map_subs` — map subscriptions (keyed channel state): the server API's map methods, raw
//!   state pages, centrifuge-js 5.8 over JSON and protobuf.
//! * `map_subs_redis` — map subscriptions on the Redis engine: two nodes on one redis-server.
//! * `map_proxy` — map publish and remove proxies against an HTTP backend in the test (and the
//!   gRPC one of `proxy`): rewritten keys, data and tags, errors, disconnects, config checks.
//! * `shared_poll` — shared poll subscriptions against a real HTTP backend in the test: tracking
//!   with signatures, versioned and versionless polling, pushes, removals, epochs, error codes.
//! * `shared_poll_sdk` — shared poll subscriptions with centrifuge-js 5.8 over JSON and
//!   protobuf: track/untrack, updates and removals, a cut and the SDK's replay, signature errors.
//! * `shared_poll_proxies` — shared poll keys polled over gRPC, subscribe proxies deciding
//!   shared poll subscribes (HTTP and gRPC), shared poll subscribers in presence maps.
//! * `http`   — HTTP/1.1 edge cases (keep-alive, pipelining, 100-continue, limits, garbage).
//! * `cent`   — the official Python `cent` client (`tests/python/test_cent.py`).
//! * `recovery` — recovery on subscribe: the "reject unrecovered" flag, cache recovery.
//! * `shared_poll_api` — the server API's `shared_poll_publish`: its errors over HTTP (new
//!   style, legacy lines, batch) and its pushes to a raw WebSocket client tracking a key.
//! * `redis`  — the Redis engine: several nodes on `redis-server`s of the tests' own.
//! * `gateway` — the gateway ("mesh") API: raw WebSocket clients, `/ws/v1` backends, grid.
//! * `hardening` — abuse and fault suites: slowloris, idle/half-open connections, connect
//!   cycles, clients killed mid-frame, nested JSON, invalid UTF-8, floods, slow subscribers,
//!   limits, graceful shutdown.
//! * `races`  — subscribe/unsubscribe/close/API-disconnect interleavings (both engines): the
//!   node's presence, counts and fan-out equal what the live sessions hold.
//! * `layout` — the source layout's rules: imports point down, files stay small.
//! * `token_keys` — RSA/ECDSA keys, JWKS over https (rotation, outage), the previous HMAC
//!   secret, claim regexes and subscription-token keys, with PyJWT and `jsonwebtoken` tokens.
//! * `tokens` — token claims (dates, `client`, `data`, `override`), `channel_regex` and the
//!   personal channel's `single_connection`.
//! * `shapes` — client protocol replies whose results are empty, as Centrifugo writes them.
//! * `tags_filter` — subscribers' tags filters (raw JSON and protobuf clients, both SDKs) and
//!   the connect result's server time.
//! * `transports` — HTTP-streaming, SSE, `/emulation` and the unidirectional transports over
//!   raw sockets, curl and Python consumers.
//! * `sdk_transports` — centrifuge-js over http_stream and SSE, alone and as fallbacks of
//!   WebSocket, in Node and in Chromium.
//! * `uni_grpc` — the unidirectional gRPC stream through a generated Python client.
//! * `proxy`  — the proxies (calls to the application backend) over HTTP and gRPC, against a
//!   Python backend (`tests/python/proxy_backend.py`), raw clients and both SDKs.
//! * `ws_deflate` — permessage-deflate: negotiation, compressed frames both ways, limits, and
//!   real clients that negotiate it (Python `websockets`, centrifuge-js over `ws`).
//! * `write_delay` — `client.write_delay` and its companions: frames wait, then leave
//!   together; a full batch and replies leave at once when the options say so.
//!
//! `ws_client` is the raw WebSocket client the WebSocket tests share.

mod util;
mod ws_client;

mod admin;
mod api;
mod auth;
mod bench_smoke;
mod cent;
mod cli;
mod cli_api;
mod config_audit;
mod container;
mod delta;
mod deploy;
mod examples;
mod gateway;
mod grpc;
mod hardening;
mod http;
mod layout;
mod legacy;
mod legacy_protocol;
mod logs;
mod map_proxy;
mod map_subs;
mod map_subs_redis;
mod map_writes;
mod metrics;
mod nats;
mod proxy;
mod races;
mod recovery;
mod redis;
mod redis_cluster;
mod redis_sentinel;
mod redis_tls;
mod sdk;
mod sdk_transports;
mod shapes;
mod shared_poll;
mod shared_poll_api;
mod shared_poll_proxies;
mod shared_poll_sdk;
mod tags_filter;
mod tls;
mod token_keys;
mod tokens;
mod transports;
mod uni_grpc;
mod v1_api;
mod write_delay;
mod ws_abuse;
mod ws_deflate;
mod ws_timers;
