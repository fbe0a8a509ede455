//! Wren:IDM's situations and actions, and the default policy table.

use std::fmt;

/// Where a source object stands against its link and its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Situation {
    Confirmed,
    Found,
    FoundAlreadyLinked,
    Absent,
    Ambiguous,
    Missing,
    Unqualified,
    SourceIgnored,
    TargetIgnored,
    Unassigned,
    SourceMissing,
    LinkOnly,
    AllGone,
}

/// What a reconciliation does about a situation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    Create,
    Update,
    Delete,
    Link,
    Unlink,
    Exception,
    Ignore,
    Report,
    NoReport,
    Async,
}

impl Situation {
    pub const ALL: [Situation; 13] = [
        Situation::Confirmed,
        Situation::Found,
        Situation::FoundAlreadyLinked,
        Situation::Absent,
        Situation::Ambiguous,
        Situation::Missing,
        Situation::Unqualified,
        Situation::SourceIgnored,
        Situation::TargetIgnored,
        Situation::Unassigned,
        Situation::SourceMissing,
        Situation::LinkOnly,
        Situation::AllGone,
    ];

    /// Wren:IDM's default policy; a mapping's `policies` override it.
    pub fn default_action(self) -> Action {
        match self {
            Situation::Confirmed | Situation::Found => Action::Update,
            Situation::Absent => Action::Create,
            Situation::Unqualified => Action::Delete,
            Situation::SourceIgnored | Situation::TargetIgnored => Action::Report,
            Situation::AllGone => Action::NoReport,
            Situation::FoundAlreadyLinked
            | Situation::Ambiguous
            | Situation::Missing
            | Situation::Unassigned
            | Situation::SourceMissing
            | Situation::LinkOnly => Action::Exception,
        }
    }

    /// The name Wren uses in conf and reports: `FOUND_ALREADY_LINKED`.
    pub fn name(self) -> &'static str {
        match self {
            Situation::Confirmed => "CONFIRMED",
            Situation::Found => "FOUND",
            Situation::FoundAlreadyLinked => "FOUND_ALREADY_LINKED",
            Situation::Absent => "ABSENT",
            Situation::Ambiguous => "AMBIGUOUS",
            Situation::Missing => "MISSING",
            Situation::Unqualified => "UNQUALIFIED",
            Situation::SourceIgnored => "SOURCE_IGNORED",
            Situation::TargetIgnored => "TARGET_IGNORED",
            Situation::Unassigned => "UNASSIGNED",
            Situation::SourceMissing => "SOURCE_MISSING",
            Situation::LinkOnly => "LINK_ONLY",
            Situation::AllGone => "ALL_GONE",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Situation::ALL.into_iter().find(|s| s.name() == name)
    }
}

impl Action {
    pub const ALL: [Action; 10] = [
        Action::Create,
        Action::Update,
        Action::Delete,
        Action::Link,
        Action::Unlink,
        Action::Exception,
        Action::Ignore,
        Action::Report,
        Action::NoReport,
        Action::Async,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::Create => "CREATE",
            Action::Update => "UPDATE",
            Action::Delete => "DELETE",
            Action::Link => "LINK",
            Action::Unlink => "UNLINK",
            Action::Exception => "EXCEPTION",
            Action::Ignore => "IGNORE",
            Action::Report => "REPORT",
            Action::NoReport => "NOREPORT",
            Action::Async => "ASYNC",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Action::ALL.into_iter().find(|a| a.name() == name)
    }
}

impl fmt::Display for Situation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wren_default_policies() {
        let table: Vec<(&str, &str)> = Situation::ALL
            .iter()
            .map(|s| (s.name(), s.default_action().name()))
            .collect();
        assert_eq!(
            table,
            [
                ("CONFIRMED", "UPDATE"),
                ("FOUND", "UPDATE"),
                ("FOUND_ALREADY_LINKED", "EXCEPTION"),
                ("ABSENT", "CREATE"),
                ("AMBIGUOUS", "EXCEPTION"),
                ("MISSING", "EXCEPTION"),
                ("UNQUALIFIED", "DELETE"),
                ("SOURCE_IGNORED", "REPORT"),
                ("TARGET_IGNORED", "REPORT"),
                ("UNASSIGNED", "EXCEPTION"),
                ("SOURCE_MISSING", "EXCEPTION"),
                ("LINK_ONLY", "EXCEPTION"),
                ("ALL_GONE", "NOREPORT"),
            ]
        );
        assert!(
            Situation::ALL
                .iter()
                .all(|s| Situation::parse(s.name()) == Some(*s))
        );
        assert!(
            Action::ALL
                .iter()
                .all(|a| Action::parse(a.name()) == Some(*a))
        );
    }
}
