//! The gateway's actions on a connection: `mesh.send` (a raw frame for raw clients, an async
//! `message` push for Centrifugo clients) and `conn.call` (context, server-side subscribe and
//! unsubscribe).

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;

use serde_json::Value;

use super::{commands, Session};
use crate::client::Handler;
use crate::error::Disconnect;
use crate::gateway::mesh::{MeshData, MeshError, MeshTarget};
use crate::protocol::{Format, PushBody};

impl MeshTarget for Session {
    fn mesh_send(&self, data: &MeshData) -> Result<(), String> {
        if self.raw.is_some() {
            let frame = match data {
                MeshData::Text(b) => self.client.frame_as(true, b),
                MeshData::Binary(b) => self.client.frame_as(false, b),
            };
            if self.client.send(frame).is_err() {
                self.disconnect(Disconnect::SLOW);
                return Err("failed to send: client too slow".into());
            }
            return Ok(());
        }
        let bytes = match (self.client.format, data) {
            (Format::Protobuf, MeshData::Text(b) | MeshData::Binary(b)) => b.clone(),
            (Format::Json, d) => {
                let p = d.payload();
                if !p.json_ok() {
                    return Err("failed to send: binary data to a JSON client".into());
                }
                p.bytes
            }
        };
        self.push("", &PushBody::Message { data: bytes });
        Ok(())
    }

    fn mesh_call(self: Rc<Self>, f: String, args: Vec<Value>) -> Pin<Box<dyn Future<Output = Result<(), MeshError>>>> {
        Box::pin(async move {
            match f.as_str() {
                "set_context_value" => {
                    let key =
                        args.first().and_then(|k| k.as_str()).ok_or_else(|| MeshError::bad("invalid parameter"))?;
                    let value = args.get(1).cloned().unwrap_or_default();
                    self.st.borrow_mut().context.get_or_insert_with(Default::default).insert(key.to_string(), value);
                }
                "set_context" => {
                    let Some(Value::Object(o)) = args.first() else {
                        return Err(MeshError::bad("invalid parameter"));
                    };
                    self.st.borrow_mut().context = Some(Box::new(o.clone()));
                }
                "subscribe" => {
                    for ch in args.iter().filter_map(|a| a.as_str()) {
                        if self.st.borrow().subs.contains_key(ch) {
                            continue;
                        }
                        commands::server_subscribe(&self, ch)
                            .await
                            .map_err(|e| MeshError::new(301, format!("execution failed: {}", e.message)))?;
                    }
                }
                "unsubscribe" => {
                    let push = if self.raw.is_some() { None } else { Some((2000, "server unsubscribe")) };
                    for ch in args.iter().filter_map(|a| a.as_str()) {
                        self.unsubscribe(ch, push);
                    }
                }
                _ => return Err(MeshError::bad("invalid parameter: unknown function")),
            }
            Ok(())
        })
    }
}
