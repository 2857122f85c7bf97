//! Instruments the exchange no longer lists, marked inactive.

use tokio_postgres::Client;

use tokio_postgres::types::Type;

use crate::resource::pg::{PgClient, PgError, PgOp, PgShared};
use crate::resource::Operation;

/// Marks a currency's instruments of some kinds that were not listed inactive;
/// answers how many.
#[derive(Clone, Debug)]
pub struct DeactivateInstruments {
    /// Base currency.
    pub currency: String,
    /// Kinds the listing covered.
    pub kinds: Vec<String>,
    /// Names still listed.
    pub keep: Vec<String>,
}

impl Operation for DeactivateInstruments {
    type Output = u64;
    const NAME: &'static str = "deactivate_instruments";

    fn summary(&self) -> String {
        let (currency, kinds) = (&self.currency, &self.kinds);
        format!("{currency} {kinds:?}, keeping {}", self.keep.len())
    }
}

impl PgOp for DeactivateInstruments {
    async fn attempt(
        &self,
        client: &mut Client,
        _pg: &PgShared,
    ) -> Result<u64, tokio_postgres::Error> {
        deactivate_instruments(client, &self.currency, &self.kinds, &self.keep).await
    }
}

impl PgClient {
    /// Marks `currency`'s instruments of `kinds` not in `keep` inactive.
    pub async fn deactivate_instruments(
        &self,
        currency: &str,
        kinds: Vec<String>,
        keep: Vec<String>,
    ) -> Result<u64, PgError> {
        let currency = currency.to_owned();
        self.run(DeactivateInstruments {
            currency,
            kinds,
            keep,
        })
        .await
    }
}

/// Marks `currency`'s instruments of `kinds` that are not in `keep` inactive.
async fn deactivate_instruments(
    client: &mut Client,
    currency: &str,
    kinds: &[String],
    keep: &[String],
) -> Result<u64, tokio_postgres::Error> {
    client
        .execute_typed(
            "UPDATE instruments SET is_active = false, updated_at = now()
             WHERE base_currency = $1 AND kind = ANY($2) AND is_active
               AND NOT (instrument_name = ANY($3))",
            &[
                (&currency, Type::TEXT),
                (&kinds, Type::TEXT_ARRAY),
                (&keep, Type::TEXT_ARRAY),
            ],
        )
        .await
}
