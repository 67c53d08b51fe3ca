//! Detection: finds sensitive values in text. (Temporary minimal tier, replaced by the full
//! pattern tier.)

use std::sync::Arc;

/// Kind of sensitive value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EntityType {
    /// EMAIL.
    Email,
    /// PHONE.
    Phone,
    /// SSN.
    Ssn,
    /// CREDIT_CARD.
    CreditCard,
    /// IBAN.
    Iban,
    /// ROUTING_NUMBER.
    RoutingNumber,
    /// NPI.
    Npi,
    /// DEA.
    Dea,
    /// IP_ADDRESS.
    IpAddress,
    /// URL.
    Url,
    /// DATE.
    Date,
    /// AGE.
    Age,
    /// ZIP.
    Zip,
    /// MRN.
    Mrn,
    /// HEALTH_PLAN_ID.
    HealthPlanId,
    /// ACCOUNT.
    Account,
    /// VIN.
    Vin,
    /// DEVICE_ID.
    DeviceId,
    /// PERSON.
    Person,
    /// LOCATION.
    Location,
    /// ADDRESS.
    Address,
    /// ORGANIZATION.
    Organization,
    /// Anything else, by name.
    Custom(Arc<str>),
}

impl EntityType {
    /// SCREAMING_SNAKE name.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Email => "EMAIL",
            Self::Phone => "PHONE",
            Self::Ssn => "SSN",
            Self::CreditCard => "CREDIT_CARD",
            Self::Iban => "IBAN",
            Self::RoutingNumber => "ROUTING_NUMBER",
            Self::Npi => "NPI",
            Self::Dea => "DEA",
            Self::IpAddress => "IP_ADDRESS",
            Self::Url => "URL",
            Self::Date => "DATE",
            Self::Age => "AGE",
            Self::Zip => "ZIP",
            Self::Mrn => "MRN",
            Self::HealthPlanId => "HEALTH_PLAN_ID",
            Self::Account => "ACCOUNT",
            Self::Vin => "VIN",
            Self::DeviceId => "DEVICE_ID",
            Self::Person => "PERSON",
            Self::Location => "LOCATION",
            Self::Address => "ADDRESS",
            Self::Organization => "ORGANIZATION",
            Self::Custom(s) => s,
        }
    }
}

impl std::fmt::Display for EntityType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EntityType {
    type Err = DetectError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s {
            "EMAIL" => Self::Email,
            "PHONE" => Self::Phone,
            "SSN" => Self::Ssn,
            "CREDIT_CARD" => Self::CreditCard,
            "IBAN" => Self::Iban,
            "ROUTING_NUMBER" => Self::RoutingNumber,
            "NPI" => Self::Npi,
            "DEA" => Self::Dea,
            "IP_ADDRESS" => Self::IpAddress,
            "URL" => Self::Url,
            "DATE" => Self::Date,
            "AGE" => Self::Age,
            "ZIP" => Self::Zip,
            "MRN" => Self::Mrn,
            "HEALTH_PLAN_ID" => Self::HealthPlanId,
            "ACCOUNT" => Self::Account,
            "VIN" => Self::Vin,
            "DEVICE_ID" => Self::DeviceId,
            "PERSON" => Self::Person,
            "LOCATION" => Self::Location,
            "ADDRESS" => Self::Address,
            "ORGANIZATION" => Self::Organization,
            other
                if !other.is_empty()
                    && other
                        .bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_') =>
            {
                Self::Custom(Arc::from(other))
            }
            _ => return Err(DetectError::UnknownEntity(s.chars().take(40).collect())),
        })
    }
}

/// One detected value; byte offsets into the original text.
#[derive(Debug, Clone, PartialEq)]
pub struct Finding {
    /// Start byte.
    pub start: usize,
    /// End byte.
    pub end: usize,
    /// What it is.
    pub entity: EntityType,
    /// Confidence.
    pub score: f32,
    /// Which recognizer.
    pub recognizer: &'static str,
}

/// Detector errors.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// Unknown entity name.
    #[error("unknown entity type {0:?}")]
    UnknownEntity(String),
    /// Bad regex.
    #[error("invalid pattern: {0}")]
    Pattern(String),
}

/// Dictionary of terms.
#[derive(Debug, Clone)]
pub struct DenyList {
    /// Entity.
    pub entity: EntityType,
    /// Terms.
    pub terms: Vec<String>,
    /// Case sensitivity.
    pub case_sensitive: bool,
}

/// Config.
#[derive(Debug, Clone, Default)]
pub struct PatternConfig {
    /// Deny lists.
    pub deny: Vec<DenyList>,
    /// Allow list.
    pub allow: Vec<String>,
    /// MRN formats.
    pub mrn_formats: Vec<String>,
    /// Context window.
    pub context_window: usize,
}

/// Pattern detector.
#[derive(Debug)]
pub struct PatternDetector {
    email: regex::Regex,
    card: regex::Regex,
    ssn: regex::Regex,
}

impl PatternDetector {
    /// Builds.
    pub fn new(_cfg: &PatternConfig) -> Result<Self, DetectError> {
        let r = |p: &str| regex::Regex::new(p).map_err(|e| DetectError::Pattern(e.to_string()));
        Ok(Self {
            email: r(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")?,
            card: r(r"\b(?:\d[ -]?){13,19}\b")?,
            ssn: r(r"\b\d{3}-\d{2}-\d{4}\b")?,
        })
    }
    /// Detects.
    pub fn detect(&self, text: &str) -> Vec<Finding> {
        let mut out = Vec::new();
        for (re, entity, rec) in [
            (&self.email, EntityType::Email, "email"),
            (&self.card, EntityType::CreditCard, "card"),
            (&self.ssn, EntityType::Ssn, "ssn"),
        ] {
            for m in re.find_iter(text) {
                out.push(Finding {
                    start: m.start(),
                    end: m.end(),
                    entity: entity.clone(),
                    score: 0.9,
                    recognizer: rec,
                });
            }
        }
        out.sort_by_key(|f| (f.start, std::cmp::Reverse(f.end)));
        out
    }
    /// Version.
    pub fn version(&self) -> &'static str {
        "patterns-tmp"
    }
}
