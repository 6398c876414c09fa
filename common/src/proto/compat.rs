//! The wire contract evolves only compatibly: against the descriptor set of the last release
//! (`proto/compat/fleetshift-v1.binpb`), no message, field, enum value, service or method is
//! removed (a removed field's number and name must be reserved), renumbered, renamed or
//! retyped, and no method changes its request, response or streaming. Coordinators and agents
//! of two versions talk to each other during every rolling upgrade, and replicas of two
//! versions read each other's store records.

use std::collections::HashMap;

use prost::Message;
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorSet,
    ServiceDescriptorProto,
};

use super::DESCRIPTOR_SET;

/// The descriptor set of the last release.
const RELEASED: &[u8] = include_bytes!("../../../proto/compat/fleetshift-v1.binpb");

/// Every definition of a set, by full name.
#[derive(Default)]
struct Definitions<'s> {
    messages: HashMap<String, &'s DescriptorProto>,
    enums: HashMap<String, &'s EnumDescriptorProto>,
    services: HashMap<String, &'s ServiceDescriptorProto>,
}

impl<'s> Definitions<'s> {
    fn of(set: &'s FileDescriptorSet) -> Self {
        let mut definitions = Self::default();
        for file in &set.file {
            let package = file.package();
            for message in &file.message_type {
                definitions.message(package, message);
            }
            for enumeration in &file.enum_type {
                definitions
                    .enums
                    .insert(format!("{package}.{}", enumeration.name()), enumeration);
            }
            for service in &file.service {
                definitions
                    .services
                    .insert(format!("{package}.{}", service.name()), service);
            }
        }
        definitions
    }

    fn message(&mut self, scope: &str, message: &'s DescriptorProto) {
        let name = format!("{scope}.{}", message.name());
        for nested in &message.nested_type {
            self.message(&name, nested);
        }
        for enumeration in &message.enum_type {
            self.enums
                .insert(format!("{name}.{}", enumeration.name()), enumeration);
        }
        self.messages.insert(name, message);
    }
}

/// What `new` breaks of `old`, one line each.
fn incompatibilities(old: &FileDescriptorSet, new: &FileDescriptorSet) -> Vec<String> {
    let (old, new) = (Definitions::of(old), Definitions::of(new));
    let mut broken = Vec::new();
    for (name, message) in &old.messages {
        match new.messages.get(name) {
            None => broken.push(format!("message {name} was removed")),
            Some(current) => fields(name, message, current, &mut broken),
        }
    }
    for (name, enumeration) in &old.enums {
        let Some(current) = new.enums.get(name) else {
            broken.push(format!("enum {name} was removed"));
            continue;
        };
        for value in &enumeration.value {
            let kept = current
                .value
                .iter()
                .any(|now| now.number() == value.number() && now.name() == value.name());
            if !kept {
                broken.push(format!(
                    "enum {name}: value {} = {} was removed or changed",
                    value.name(),
                    value.number()
                ));
            }
        }
    }
    for (name, service) in &old.services {
        let Some(current) = new.services.get(name) else {
            broken.push(format!("service {name} was removed"));
            continue;
        };
        for method in &service.method {
            let same = current.method.iter().any(|now| {
                now.name() == method.name()
                    && now.input_type() == method.input_type()
                    && now.output_type() == method.output_type()
                    && now.client_streaming() == method.client_streaming()
                    && now.server_streaming() == method.server_streaming()
            });
            if !same {
                broken.push(format!(
                    "rpc {name}.{} was removed or changed its request, response or streaming",
                    method.name()
                ));
            }
        }
    }
    broken.sort();
    broken
}

/// What `current` breaks of `message`'s fields.
fn fields(
    name: &str,
    message: &DescriptorProto,
    current: &DescriptorProto,
    broken: &mut Vec<String>,
) {
    for field in &message.field {
        match current
            .field
            .iter()
            .find(|now| now.number() == field.number())
        {
            Some(now) if same_field(field, now) => {}
            Some(now) => broken.push(format!(
                "{name}: field {} = {} became {} {:?} {}",
                field.name(),
                field.number(),
                now.name(),
                now.r#type(),
                now.type_name()
            )),
            None => {
                let reserved_number = current
                    .reserved_range
                    .iter()
                    .any(|range| (range.start()..range.end()).contains(&field.number()));
                let reserved_name = current
                    .reserved_name
                    .iter()
                    .any(|reserved| reserved == field.name());
                if !(reserved_number && reserved_name) {
                    broken.push(format!(
                        "{name}: field {} = {} was removed without reserving its number and name",
                        field.name(),
                        field.number()
                    ));
                }
            }
        }
    }
}

fn same_field(old: &FieldDescriptorProto, new: &FieldDescriptorProto) -> bool {
    old.name() == new.name()
        && old.r#type() == new.r#type()
        && old.type_name() == new.type_name()
        && old.label() == new.label()
        && old.oneof_index.is_some() == new.oneof_index.is_some()
}

fn decode(bytes: &[u8]) -> FileDescriptorSet {
    FileDescriptorSet::decode(bytes).expect("a descriptor set")
}

#[test]
fn the_contract_is_compatible_with_the_last_release() {
    let broken = incompatibilities(&decode(RELEASED), &decode(DESCRIPTOR_SET));
    assert!(
        broken.is_empty(),
        "incompatible with the last release:\n{}",
        broken.join("\n")
    );
}

#[test]
fn removing_renumbering_retyping_or_reshaping_is_caught() {
    let released = decode(RELEASED);
    let mut changed = decode(RELEASED);
    for file in &mut changed.file {
        for message in &mut file.message_type {
            match message.name() {
                "Hello" => message
                    .field
                    .retain(|field| field.name() != "agent_version"),
                "Heartbeat" => {
                    for field in &mut message.field {
                        field.number = Some(field.number() + 100);
                    }
                }
                "Assignment" => {
                    for field in &mut message.field {
                        if field.name() == "fence_token" {
                            field.set_type(prost_types::field_descriptor_proto::Type::String);
                        }
                    }
                }
                _ => {}
            }
        }
        for enumeration in &mut file.enum_type {
            if enumeration.name() == "Direction" {
                enumeration.value.pop();
            }
        }
        for service in &mut file.service {
            for method in &mut service.method {
                if method.name() == "WatchRollout" {
                    method.server_streaming = Some(false);
                }
            }
        }
    }
    let broken = incompatibilities(&released, &changed);
    let named = |text: &str| broken.iter().any(|line| line.contains(text));
    assert!(
        named("Hello: field agent_version = 2 was removed"),
        "{broken:#?}"
    );
    assert!(named("fleetshift.v1.Heartbeat: field"), "{broken:#?}");
    assert!(
        named("Assignment: field fence_token = 4 became"),
        "{broken:#?}"
    );
    assert!(named("enum fleetshift.v1.Direction"), "{broken:#?}");
    assert!(
        named("rpc fleetshift.v1.FleetService.WatchRollout"),
        "{broken:#?}"
    );
    assert!(incompatibilities(&released, &released).is_empty());
}
