//! The test CA lives in the testkit (slapd's certificates come from it too).
pub use idm_testkit::pki::*;
