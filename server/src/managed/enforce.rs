//! Where Wren's policies meet a write: the whole object's check
//! (`check_policies`), the store-backed policies (`lookup_failures`:
//! `no-internal-user-conflict`, `mapping-exists`, and `unique` for
//! `validate`; a write leaves `unique` to the store's keys and reports its
//! collision as the policy's failure, `unique_policy`), and `validate`
//! (Wren's `validateObject`).

use serde_json::{Map, Value, json};

use super::{Failures, Lookup, ManagedError, ManagedObjects, ObjectType, Prepared};

/// Wren's policies of every declared property against a whole object (a
/// `null` counts as absent, as a write treats it). On an `update`, a private
/// property the request leaves out keeps its stored value and is not checked;
/// `only_given` checks only the properties present (Wren's `validateProperty`).
pub(super) fn check_policies(
    object_type: &ObjectType,
    attributes: &Map<String, Value>,
    update: bool,
    only_given: bool,
) -> Failures {
    let mut failures = Failures::default();
    for (name, property) in &object_type.properties {
        let value = attributes.get(name).filter(|v| !v.is_null());
        if value.is_none() && ((update && property.private) || only_given) {
            continue;
        }
        failures.check_property(attributes, name, value, &property.policies);
    }
    failures
}

/// `prepare`'s result with the store-backed policies' failures added in.
pub(super) fn merge_failures(
    prepared: Result<Prepared, ManagedError>,
    extra: Failures,
) -> Result<Prepared, ManagedError> {
    match prepared {
        Ok(prepared) if extra.is_empty() => Ok(prepared),
        Ok(_) => Err(ManagedError::Policy(extra)),
        Err(ManagedError::Policy(mut failures)) => {
            for failure in extra.0 {
                for (requirement, id) in failure
                    .policy_requirements
                    .into_iter()
                    .zip(failure.policy_ids)
                {
                    failures.add_named(&failure.property, id, requirement);
                }
            }
            Err(ManagedError::Policy(failures))
        }
        Err(other) if extra.is_empty() => Err(other),
        Err(_) => Err(ManagedError::Policy(extra)),
    }
}

/// A value already taken, on a property with Wren's `unique` policy, is
/// reported as that policy's failure.
pub(super) fn unique_policy(object_type: &ObjectType, error: ManagedError) -> ManagedError {
    let ManagedError::NotUnique { property } = &error else {
        return error;
    };
    let Some(policy) = object_type.properties.get(property).and_then(|p| {
        p.policies
            .iter()
            .find(|p| p.lookup() == Some(Lookup::Unique))
    }) else {
        return error;
    };
    let mut failures = Failures::default();
    failures.add(property, policy, policy.lookup_failure());
    ManagedError::Policy(failures)
}

impl ManagedObjects {
    /// The store-backed policies' failures for the values in `attributes`:
    /// `no-internal-user-conflict` (an account of that name exists) and
    /// `mapping-exists`; `unique` too when `unique_except` is given (writes
    /// leave it to the store's unique keys), ignoring that object's own value.
    pub(super) async fn lookup_failures(
        &self,
        object_type: &ObjectType,
        attributes: &Map<String, Value>,
        unique_except: Option<&str>,
    ) -> Result<Failures, ManagedError> {
        let mut failures = Failures::default();
        for (name, property) in &object_type.properties {
            let Some(value) = attributes.get(name) else {
                continue;
            };
            for policy in &property.policies {
                let Some(lookup) = policy.lookup() else {
                    continue;
                };
                let text = match value {
                    Value::String(s) if !s.is_empty() => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => continue,
                };
                let conflict = match lookup {
                    Lookup::InternalUser => self.store.get_account(&text).await?.is_some(),
                    Lookup::Mapping => self.store.get_config("mapping", &text).await?.is_none(),
                    Lookup::Unique => match unique_except {
                        None => false,
                        Some(own) => {
                            let key = if property.case_exact {
                                text.clone()
                            } else {
                                text.to_lowercase()
                            };
                            self.store
                                .lookup_unique(&object_type.name, name, &key)
                                .await?
                                .is_some_and(|holder| holder != own)
                        }
                    },
                };
                if conflict {
                    failures.add(name, policy, policy.lookup_failure());
                }
            }
        }
        Ok(failures)
    }

    /// Wren's `validateObject` (`only_given`: `validateProperty`): the
    /// policies' verdict on `attributes` as a create (`id` `None`) or as the
    /// new state of object `id`, without writing anything.
    pub async fn validate(
        &self,
        type_name: &str,
        id: Option<&str>,
        attributes: &Map<String, Value>,
        only_given: bool,
    ) -> Result<Failures, ManagedError> {
        let object_type = self.schema.get(type_name)?;
        let mut failures = check_policies(object_type, attributes, id.is_some(), only_given);
        if let Some(id) = id {
            let as_object = Map::from_iter([("_id".to_string(), json!(id))]);
            failures.check_property(
                &as_object,
                "_id",
                as_object.get("_id"),
                &object_type.id_policies,
            );
        }
        let extra = self
            .lookup_failures(object_type, attributes, Some(id.unwrap_or_default()))
            .await?;
        for failure in extra.0 {
            for (requirement, policy_id) in failure
                .policy_requirements
                .into_iter()
                .zip(failure.policy_ids)
            {
                failures.add_named(&failure.property, policy_id, requirement);
            }
        }
        Ok(failures)
    }
}
