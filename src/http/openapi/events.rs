//! One documented operation per ingest route (`routes.yaml`): `POST /api/v1/events/{name}`
//! and its `/batch`, each with the JSON Schema of the route's topic as the request body —
//! built from the Avro schema the gateway validates against (`schema::jsonschema`) plus what
//! the topic's rules check (`schema::rules::Rules::describe`) — so the fields, types, enums
//! and optionals in the document are the ones the gateway enforces. The generic
//! `/api/v1/events/{route}` operations stay: they document the answers for any route name.

use serde_json::{Map, Value, json};

use crate::app::AppContext;
use crate::gateway::routes::RouteSpec;

/// What the event operations are built from.
pub struct Catalog {
    /// Each route with its topic and the JSON Schema of one event.
    pub routes: Vec<(String, RouteSpec, Value)>,
    /// `gateway.batch_max_events`.
    pub batch_max: usize,
}

impl Catalog {
    /// The live route table and the catalog's current schemas; a route whose topic has no
    /// schema (cannot happen after `routes::parse`) is left out.
    pub fn of(ctx: &AppContext) -> Catalog {
        let table = ctx.routes.current();
        let routes = table
            .routes
            .iter()
            .filter_map(|(name, spec)| {
                let ts = ctx.schemas.topic(&spec.topic)?;
                let mut body = crate::schema::jsonschema::json_schema(&ts.schema, &ts.names);
                ctx.schemas.rules().describe(&spec.topic, &mut body);
                Some((name.clone(), spec.clone(), body))
            })
            .collect();
        Catalog {
            routes,
            batch_max: ctx.config.gateway.batch_max_events,
        }
    }
}

/// A route name that can stand in a path as it is (the gateway's names are identifiers).
fn plain(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.')
}

/// Adds the per-route operations to `doc`, modelled on the generic ones.
pub fn add_routes(doc: &mut Value, catalog: &Catalog) {
    let one = doc["paths"]["/api/v1/events/{route}"]["post"].clone();
    let batch = doc["paths"]["/api/v1/events/{route}/batch"]["post"].clone();
    if one.is_null() || batch.is_null() {
        return;
    }
    let Some(paths) = doc["paths"].as_object_mut() else {
        return;
    };
    for (name, spec, event) in catalog.routes.iter().filter(|(n, ..)| plain(n)) {
        let event = for_callers(event.clone(), spec);
        let id = name.replace(['-', '.'], "_");
        let single = concrete(
            &one,
            &format!("post_{id}_event"),
            &format!("Post one `{}` event", spec.topic),
            event.clone(),
        );
        let items = json!({ "type": "array", "items": event, "minItems": 1, "maxItems": catalog.batch_max });
        let many = json!({ "oneOf": [
            items,
            { "type": "object", "properties": { "events": items }, "required": ["events"] },
        ]});
        let several = concrete(
            &batch,
            &format!("post_{id}_events"),
            &format!(
                "Post up to {} `{}` events, all or none",
                catalog.batch_max, spec.topic
            ),
            many,
        );
        paths.insert(format!("/api/v1/events/{name}"), json!({ "post": single }));
        paths.insert(
            format!("/api/v1/events/{name}/batch"),
            json!({ "post": several }),
        );
    }
}

/// The generic operation for one route: no `route` parameter, the topic's body.
fn concrete(generic: &Value, id: &str, summary: &str, body: Value) -> Value {
    let mut op = generic.clone();
    if let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) {
        params.retain(|p| p["name"] != "route");
    }
    op["operationId"] = Value::String(id.to_string());
    op["summary"] = Value::String(summary.to_string());
    op["requestBody"] = json!({
        "required": true,
        "content": { "application/json": { "schema": body } },
    });
    op
}

/// Users post for themselves: the gateway fills in `user_id` (and `email` from the token's
/// claim) when they are missing, so on a route open to users they are optional.
fn for_callers(mut event: Value, spec: &RouteSpec) -> Value {
    if !spec.allow.iter().any(|k| k == "user") {
        return event;
    }
    let has_user_id = event["properties"].get("user_id").is_some();
    if !has_user_id {
        return event;
    }
    if let Some(req) = event.get_mut("required").and_then(Value::as_array_mut) {
        req.retain(|f| f != "user_id" && f != "email");
    }
    let note = |p: &mut Map<String, Value>, text: &str| {
        p.insert("description".into(), Value::String(text.into()));
    };
    if let Some(p) = event["properties"]["user_id"].as_object_mut() {
        note(
            p,
            "The author. A user may leave it out (it is their id) and may not name another; \
             a service sets it (it becomes the event key).",
        );
    }
    if let Some(p) = event["properties"]["email"].as_object_mut() {
        note(
            p,
            "Filled in from the token's `email` claim when a user leaves it out.",
        );
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    fn generic(path: &str) -> Value {
        json!({ "operationId": path, "parameters": [{"name": "route", "in": "path"}], "responses": {"202": {}} })
    }

    #[test]
    fn one_operation_per_route_with_the_topic_body() {
        let mut doc = json!({ "paths": {
            "/api/v1/events/{route}": { "post": generic("post_one") },
            "/api/v1/events/{route}/batch": { "post": generic("post_batch") },
        }});
        let spec: RouteSpec =
            serde_yaml::from_str("topic: public.user.message.events\nallow: [user]").expect("spec");
        let event = json!({ "type": "object", "properties": {"user_id": {}, "email": {}, "message": {}},
            "required": ["user_id", "email", "message"] });
        let bad: RouteSpec = serde_yaml::from_str("topic: t").expect("spec");
        let cat = Catalog {
            routes: vec![
                ("message".into(), spec, event),
                ("a/b".into(), bad, json!({})),
            ],
            batch_max: 7,
        };
        add_routes(&mut doc, &cat);
        let op = &doc["paths"]["/api/v1/events/message"]["post"];
        assert_eq!(op["operationId"], "post_message_event");
        assert_eq!(op["parameters"], json!([]));
        let body = &op["requestBody"]["content"]["application/json"]["schema"];
        assert_eq!(body["required"], json!(["message"]));
        let batch = &doc["paths"]["/api/v1/events/message/batch"]["post"]["requestBody"];
        assert_eq!(
            batch["content"]["application/json"]["schema"]["oneOf"][0]["maxItems"],
            7
        );
        assert_eq!(doc["paths"].as_object().map(|p| p.len()), Some(4));
    }
}
