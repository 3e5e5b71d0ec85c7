//! Outgoing mail over SMTP (lettre): the validation mails of email addresses and password resets.
//!
//! Each mail opens its own SMTP connection (no pool: mails are rare and rate limited), with a
//! timeout, so a dead mail server costs a request its answer, never a hang.

use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{Config, SmtpTls};
use crate::{Error, Result};

/// How long one mail may take to hand over.
const SMTP_TIMEOUT: Duration = Duration::from_secs(20);

/// Email as configured: how to send and what links to put in the mails.
pub struct EmailService {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// `public_baseurl`, ending in `/`: the links in the mails point here.
    pub public_baseurl: String,
    /// How long a validation token works.
    pub token_lifetime_ms: i64,
}

/// What to mail.
pub struct Mail<'a> {
    pub to: &'a str,
    pub subject: &'a str,
    pub text: String,
}

impl EmailService {
    /// None when no SMTP host is configured (email is off).
    pub fn from_config(config: &Config) -> Result<Option<Self>> {
        let email = &config.email;
        let Some(host) = &email.smtp_host else {
            return Ok(None);
        };
        let smtp_error =
            |e: lettre::transport::smtp::Error| Error::internal(format!("email.smtp_host: {e}"));
        let mut builder = match email.tls {
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            SmtpTls::Starttls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host).map_err(smtp_error)?
            }
            SmtpTls::Tls => {
                AsyncSmtpTransport::<Tokio1Executor>::relay(host).map_err(smtp_error)?
            }
        }
        .port(email.smtp_port)
        .timeout(Some(SMTP_TIMEOUT));
        if let (Some(user), Some(pass)) = (&email.smtp_user, &email.smtp_pass) {
            builder = builder.credentials(Credentials::new(user.clone(), pass.clone()));
        }
        let from = email
            .notif_from
            .parse()
            .map_err(|e| Error::internal(format!("email.notif_from: {e}")))?;
        Ok(Some(Self {
            transport: builder.build(),
            from,
            public_baseurl: config.public_baseurl(),
            token_lifetime_ms: email.validation_token_lifetime_ms as i64,
        }))
    }

    /// Hands the mail to the SMTP server.
    pub async fn send(&self, mail: Mail<'_>) -> Result<()> {
        let to: Mailbox = mail
            .to
            .parse()
            .map_err(|_| Error::invalid_param("Invalid email address"))?;
        let message = Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(mail.subject)
            .header(ContentType::TEXT_PLAIN)
            .body(mail.text)
            .map_err(|e| Error::internal(format!("building a mail: {e}")))?;
        self.transport.send(message).await.map_err(|e| {
            tracing::warn!(error = %e, "sending a mail failed");
            Error::email_not_sent("The email could not be sent; try again later")
        })?;
        Ok(())
    }
}
