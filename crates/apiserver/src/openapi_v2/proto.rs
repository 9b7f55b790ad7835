//! The protobuf form of `/openapi/v2`: gnostic's `openapi.v2.Document`
//! (`proto/openapiv2/OpenAPIv2.proto`, compiled by prost with protox in `build.rs`), which
//! client-go's `OpenAPISchema()` decodes for kubectl. [`encode`] maps the JSON document
//! onto those messages as gnostic's `ParseDocument` does for kube-apiserver: maps become
//! ordered `Named*` lists (in the JSON's key order, which is sorted), every `x-` key becomes
//! a vendor extension whose value is kept as YAML text (kubectl reads the group-version-kind
//! and the patch metadata by unmarshalling that text), and so do defaults, examples and
//! enum values.
//!
//! Only what a Swagger 2.0 document of ours can hold is mapped; anything else (a form or
//! header parameter, an OAuth2 scheme) is an error, which the unit tests would meet.

use prost::Message;
use serde_json::{Map, Value};

/// The messages generated from gnostic's `OpenAPIv2.proto`.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/openapi.v2.rs"));
}

use pb::*;

type Result<T> = std::result::Result<T, String>;

/// The document's protobuf encoding.
pub fn encode(doc: &Value) -> Result<Vec<u8>> {
    Ok(document(doc)?.encode_to_vec())
}

fn obj<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>> {
    v.as_object().ok_or_else(|| format!("{what} is not an object"))
}

fn string(m: &Map<String, Value>, k: &str) -> String {
    m.get(k).and_then(Value::as_str).unwrap_or("").to_string()
}

fn strings(m: &Map<String, Value>, k: &str) -> Vec<String> {
    m.get(k).and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect()
}

fn boolean(m: &Map<String, Value>, k: &str) -> bool {
    m.get(k).and_then(Value::as_bool).unwrap_or(false)
}

fn int(m: &Map<String, Value>, k: &str) -> i64 {
    m.get(k).and_then(Value::as_i64).unwrap_or(0)
}

fn float(m: &Map<String, Value>, k: &str) -> f64 {
    m.get(k).and_then(Value::as_f64).unwrap_or(0.0)
}

/// gnostic's `Any`: the value as YAML text.
fn any(v: &Value) -> Any {
    Any { value: None, yaml: serde_norway::to_string(v).unwrap_or_default() }
}

fn any_of(m: &Map<String, Value>, k: &str) -> Option<Any> {
    m.get(k).map(any)
}

/// The `x-` keys of an object, in order.
fn extensions(m: &Map<String, Value>) -> Vec<NamedAny> {
    m.iter()
        .filter(|(k, _)| k.starts_with("x-"))
        .map(|(k, v)| NamedAny { name: k.clone(), value: Some(any(v)) })
        .collect()
}

fn document(v: &Value) -> Result<Document> {
    let m = obj(v, "the document")?;
    let info = match m.get("info") {
        Some(i) => {
            let i = obj(i, "info")?;
            Some(Info {
                title: string(i, "title"),
                version: string(i, "version"),
                description: string(i, "description"),
                terms_of_service: string(i, "termsOfService"),
                contact: None,
                license: None,
                vendor_extension: extensions(i),
            })
        }
        None => None,
    };
    let definitions = match m.get("definitions") {
        Some(d) => Some(Definitions { additional_properties: named_schemas(obj(d, "definitions")?)? }),
        None => None,
    };
    let security_definitions = match m.get("securityDefinitions") {
        Some(d) => {
            let mut items = Vec::new();
            for (name, s) in obj(d, "securityDefinitions")? {
                items.push(NamedSecurityDefinitionsItem { name: name.clone(), value: Some(security_scheme(s)?) });
            }
            Some(SecurityDefinitions { additional_properties: items })
        }
        None => None,
    };
    Ok(Document {
        swagger: string(m, "swagger"),
        info,
        host: string(m, "host"),
        base_path: string(m, "basePath"),
        schemes: strings(m, "schemes"),
        consumes: strings(m, "consumes"),
        produces: strings(m, "produces"),
        paths: m.get("paths").map(paths).transpose()?,
        definitions,
        parameters: None,
        responses: None,
        security: security(m.get("security"))?,
        security_definitions,
        tags: Vec::new(),
        external_docs: None,
        vendor_extension: extensions(m),
    })
}

fn security(v: Option<&Value>) -> Result<Vec<SecurityRequirement>> {
    let mut out = Vec::new();
    for req in v.and_then(Value::as_array).into_iter().flatten() {
        let mut named = Vec::new();
        for (name, scopes) in obj(req, "a security requirement")? {
            let value = scopes.as_array().into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect();
            named.push(NamedStringArray { name: name.clone(), value: Some(StringArray { value }) });
        }
        out.push(SecurityRequirement { additional_properties: named });
    }
    Ok(out)
}

fn security_scheme(v: &Value) -> Result<SecurityDefinitionsItem> {
    let m = obj(v, "a security scheme")?;
    match m.get("type").and_then(Value::as_str) {
        Some("apiKey") => Ok(SecurityDefinitionsItem {
            oneof: Some(security_definitions_item::Oneof::ApiKeySecurity(ApiKeySecurity {
                r#type: string(m, "type"),
                name: string(m, "name"),
                r#in: string(m, "in"),
                description: string(m, "description"),
                vendor_extension: extensions(m),
            })),
        }),
        other => Err(format!("security scheme type {other:?} is not mapped")),
    }
}

fn paths(v: &Value) -> Result<Paths> {
    let m = obj(v, "paths")?;
    let mut path = Vec::new();
    for (name, item) in m.iter().filter(|(k, _)| !k.starts_with("x-")) {
        path.push(NamedPathItem { name: name.clone(), value: Some(path_item(item)?) });
    }
    Ok(Paths { vendor_extension: extensions(m), path })
}

fn path_item(v: &Value) -> Result<PathItem> {
    let m = obj(v, "a path item")?;
    let op = |k: &str| m.get(k).map(operation).transpose();
    Ok(PathItem {
        r#ref: string(m, "$ref"),
        get: op("get")?,
        put: op("put")?,
        post: op("post")?,
        delete: op("delete")?,
        options: op("options")?,
        head: op("head")?,
        patch: op("patch")?,
        parameters: parameters(m)?,
        vendor_extension: extensions(m),
    })
}

fn operation(v: &Value) -> Result<Operation> {
    let m = obj(v, "an operation")?;
    Ok(Operation {
        tags: strings(m, "tags"),
        summary: string(m, "summary"),
        description: string(m, "description"),
        external_docs: None,
        operation_id: string(m, "operationId"),
        produces: strings(m, "produces"),
        consumes: strings(m, "consumes"),
        parameters: parameters(m)?,
        responses: m.get("responses").map(responses).transpose()?,
        schemes: strings(m, "schemes"),
        deprecated: boolean(m, "deprecated"),
        security: security(m.get("security"))?,
        vendor_extension: extensions(m),
    })
}

fn parameters(m: &Map<String, Value>) -> Result<Vec<ParametersItem>> {
    let mut out = Vec::new();
    for p in m.get("parameters").and_then(Value::as_array).into_iter().flatten() {
        out.push(parameter(p)?);
    }
    Ok(out)
}

fn parameter(v: &Value) -> Result<ParametersItem> {
    use non_body_parameter::Oneof as NonBody;
    let m = obj(v, "a parameter")?;
    if let Some(r) = m.get("$ref").and_then(Value::as_str) {
        let reference = JsonReference { r#ref: r.to_string(), description: string(m, "description") };
        return Ok(ParametersItem { oneof: Some(parameters_item::Oneof::JsonReference(reference)) });
    }
    let param = match m.get("in").and_then(Value::as_str) {
        Some("body") => parameter::Oneof::BodyParameter(BodyParameter {
            description: string(m, "description"),
            name: string(m, "name"),
            r#in: string(m, "in"),
            required: boolean(m, "required"),
            schema: m.get("schema").map(schema).transpose()?,
            vendor_extension: extensions(m),
        }),
        Some("query") => parameter::Oneof::NonBodyParameter(NonBodyParameter {
            oneof: Some(NonBody::QueryParameterSubSchema(QueryParameterSubSchema {
                required: boolean(m, "required"),
                r#in: string(m, "in"),
                description: string(m, "description"),
                name: string(m, "name"),
                allow_empty_value: boolean(m, "allowEmptyValue"),
                r#type: string(m, "type"),
                format: string(m, "format"),
                items: None,
                collection_format: string(m, "collectionFormat"),
                default: any_of(m, "default"),
                unique_items: boolean(m, "uniqueItems"),
                vendor_extension: extensions(m),
                ..std::default::Default::default()
            })),
        }),
        Some("path") => parameter::Oneof::NonBodyParameter(NonBodyParameter {
            oneof: Some(NonBody::PathParameterSubSchema(PathParameterSubSchema {
                required: boolean(m, "required"),
                r#in: string(m, "in"),
                description: string(m, "description"),
                name: string(m, "name"),
                r#type: string(m, "type"),
                format: string(m, "format"),
                items: None,
                collection_format: string(m, "collectionFormat"),
                default: any_of(m, "default"),
                unique_items: boolean(m, "uniqueItems"),
                vendor_extension: extensions(m),
                ..std::default::Default::default()
            })),
        }),
        other => return Err(format!("parameters in {other:?} are not mapped")),
    };
    Ok(ParametersItem { oneof: Some(parameters_item::Oneof::Parameter(Parameter { oneof: Some(param) })) })
}

fn responses(v: &Value) -> Result<Responses> {
    let m = obj(v, "responses")?;
    let mut codes = Vec::new();
    for (code, r) in m.iter().filter(|(k, _)| !k.starts_with("x-")) {
        let rm = obj(r, "a response")?;
        let value = if let Some(reference) = rm.get("$ref").and_then(Value::as_str) {
            response_value::Oneof::JsonReference(JsonReference {
                r#ref: reference.to_string(),
                description: string(rm, "description"),
            })
        } else {
            let schema = rm.get("schema").map(schema).transpose()?;
            response_value::Oneof::Response(Response {
                description: string(rm, "description"),
                schema: schema.map(|s| SchemaItem { oneof: Some(schema_item::Oneof::Schema(s)) }),
                headers: None,
                examples: None,
                vendor_extension: extensions(rm),
            })
        };
        codes.push(NamedResponseValue { name: code.clone(), value: Some(ResponseValue { oneof: Some(value) }) });
    }
    Ok(Responses { response_code: codes, vendor_extension: extensions(m) })
}

fn named_schemas(m: &Map<String, Value>) -> Result<Vec<NamedSchema>> {
    let mut out = Vec::new();
    for (name, s) in m {
        out.push(NamedSchema { name: name.clone(), value: Some(schema(s)?) });
    }
    Ok(out)
}

fn schema(v: &Value) -> Result<Schema> {
    let m = obj(v, "a schema")?;
    let r#type = match m.get("type") {
        Some(Value::String(t)) => Some(TypeItem { value: vec![t.clone()] }),
        Some(Value::Array(ts)) => {
            Some(TypeItem { value: ts.iter().filter_map(Value::as_str).map(str::to_string).collect() })
        }
        Some(other) => return Err(format!("type {other} is neither a name nor a list of names")),
        None => None,
    };
    let items = match m.get("items") {
        Some(Value::Array(a)) => Some(ItemsItem { schema: a.iter().map(schema).collect::<Result<_>>()? }),
        Some(s) => Some(ItemsItem { schema: vec![schema(s)?] }),
        None => None,
    };
    let additional_properties = match m.get("additionalProperties") {
        Some(Value::Bool(b)) => {
            Some(AdditionalPropertiesItem { oneof: Some(additional_properties_item::Oneof::Boolean(*b)) })
        }
        Some(s) => Some(AdditionalPropertiesItem {
            oneof: Some(additional_properties_item::Oneof::Schema(Box::new(schema(s)?))),
        }),
        None => None,
    };
    let properties = match m.get("properties") {
        Some(p) => Some(Properties { additional_properties: named_schemas(obj(p, "properties")?)? }),
        None => None,
    };
    let all_of = match m.get("allOf").and_then(Value::as_array) {
        Some(a) => a.iter().map(schema).collect::<Result<_>>()?,
        None => Vec::new(),
    };
    Ok(Schema {
        r#ref: string(m, "$ref"),
        format: string(m, "format"),
        title: string(m, "title"),
        description: string(m, "description"),
        default: any_of(m, "default"),
        multiple_of: float(m, "multipleOf"),
        maximum: float(m, "maximum"),
        exclusive_maximum: boolean(m, "exclusiveMaximum"),
        minimum: float(m, "minimum"),
        exclusive_minimum: boolean(m, "exclusiveMinimum"),
        max_length: int(m, "maxLength"),
        min_length: int(m, "minLength"),
        pattern: string(m, "pattern"),
        max_items: int(m, "maxItems"),
        min_items: int(m, "minItems"),
        unique_items: boolean(m, "uniqueItems"),
        max_properties: int(m, "maxProperties"),
        min_properties: int(m, "minProperties"),
        required: strings(m, "required"),
        r#enum: m.get("enum").and_then(Value::as_array).into_iter().flatten().map(any).collect(),
        additional_properties: additional_properties.map(Box::new),
        r#type,
        items,
        all_of,
        properties,
        discriminator: string(m, "discriminator"),
        read_only: boolean(m, "readOnly"),
        xml: None,
        external_docs: None,
        example: any_of(m, "example"),
        vendor_extension: extensions(m),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_served_document_decodes_as_gnostic_messages() {
        let doc = crate::openapi_v2::document();
        let bytes = encode(&doc).unwrap();
        let back = Document::decode(bytes.as_slice()).unwrap();
        assert_eq!(back.swagger, "2.0");
        let defs = back.definitions.unwrap().additional_properties;
        let pod = defs.iter().find(|d| d.name == "io.k8s.api.core.v1.Pod").unwrap().value.as_ref().unwrap();
        // kubectl finds a kind's definition by this extension, unmarshalling its YAML.
        let gvk = pod.vendor_extension.iter().find(|e| e.name == "x-kubernetes-group-version-kind").unwrap();
        let parsed: Value = serde_norway::from_str(&gvk.value.as_ref().unwrap().yaml).unwrap();
        assert_eq!(parsed, json!([{"group": "", "kind": "Pod", "version": "v1"}]));
        let props = &pod.properties.as_ref().unwrap().additional_properties;
        let spec = props.iter().find(|p| p.name == "spec").unwrap().value.as_ref().unwrap();
        assert_eq!(spec.r#ref, "#/definitions/io.k8s.api.core.v1.PodSpec");
        // The v2 query-parameter check: a PATCH with the kind's GVK lists fieldValidation.
        let paths = back.paths.unwrap().path;
        let cm = paths.iter().find(|p| p.name == "/api/v1/namespaces/{namespace}/configmaps/{name}").unwrap();
        let patch = cm.value.as_ref().unwrap().patch.as_ref().unwrap();
        let names: Vec<String> = patch
            .parameters
            .iter()
            .filter_map(|p| match &p.oneof {
                Some(parameters_item::Oneof::Parameter(Parameter {
                    oneof:
                        Some(parameter::Oneof::NonBodyParameter(NonBodyParameter {
                            oneof: Some(non_body_parameter::Oneof::QueryParameterSubSchema(q)),
                        })),
                })) => Some(q.name.clone()),
                _ => None,
            })
            .collect();
        assert!(names.contains(&"fieldValidation".to_string()), "{names:?}");
    }

    #[test]
    fn schemas_map_every_keyword_we_use() {
        let s = json!({
            "type": "object",
            "required": ["a"],
            "properties": {"a": {"type": "array", "items": {"type": "string"}}, "m": {"type": "object", "additionalProperties": {"type": "integer", "format": "int32"}}},
            "x-kubernetes-map-type": "atomic",
            "default": {"a": []},
            "enum": ["x"],
        });
        let p = schema(&s).unwrap();
        assert_eq!(p.r#type.unwrap().value, ["object"]);
        assert_eq!(p.required, ["a"]);
        assert_eq!(p.default.unwrap().yaml, "a: []\n");
        assert_eq!(p.r#enum[0].yaml, "x\n");
        assert_eq!(p.vendor_extension[0].value.as_ref().unwrap().yaml, "atomic\n");
        let props = p.properties.unwrap().additional_properties;
        assert_eq!(
            props[0].value.as_ref().unwrap().items.as_ref().unwrap().schema[0].r#type.as_ref().unwrap().value,
            ["string"]
        );
        match &props[1].value.as_ref().unwrap().additional_properties.as_ref().unwrap().oneof {
            Some(additional_properties_item::Oneof::Schema(s)) => assert_eq!(s.format, "int32"),
            other => panic!("{other:?}"),
        }
        assert!(parameter(&json!({"in": "formData", "name": "f"})).is_err());
    }
}
