//! HTTP proxies: `POST <endpoint>` with the JSON request, from the worker's event loop.
