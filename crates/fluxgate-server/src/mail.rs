//! Outgoing mail over SMTP (lettre), or into the log when no SMTP server is configured. Mail is
//! sent in the background with retries; shutdown waits for what is in flight.

use lettre::message::{Body, Mailbox};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::task::TaskTracker;

/// Sends mail.
#[derive(Clone)]
pub struct Mailer {
    inner: Arc<MailerInner>,
    tasks: TaskTracker,
}

struct MailerInner {
    transport: Option<AsyncSmtpTransport<Tokio1Executor>>,
    from: Mailbox,
}

/// A message to send.
#[derive(Debug, Clone)]
pub struct Mail {
    /// Recipient address.
    pub to: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body.
    pub body: String,
}

impl Mailer {
    /// SMTP when `smtp_url` is set, else the log.
    pub fn new(smtp_url: Option<&str>, from: &str) -> anyhow::Result<Self> {
        let from: Mailbox = from
            .parse()
            .map_err(|e| anyhow::anyhow!("smtp_from: {e}"))?;
        let transport = match smtp_url {
            Some(url) => Some(
                AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
                    .map_err(|e| anyhow::anyhow!("smtp_url: {e}"))?
                    .timeout(Some(Duration::from_secs(10)))
                    .build(),
            ),
            None => None,
        };
        Ok(Self {
            inner: Arc::new(MailerInner { transport, from }),
            tasks: TaskTracker::new(),
        })
    }

    /// Queues a message; delivery happens in the background, retried three times.
    pub fn send(&self, mail: Mail) {
        let inner = self.inner.clone();
        self.tasks.spawn(async move {
            for attempt in 1..=3u32 {
                match inner.deliver(&mail).await {
                    Ok(()) => return,
                    Err(error) => {
                        tracing::warn!(attempt, to = %mail.to, subject = %mail.subject, error = %error, "mail delivery failed");
                        tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt))).await;
                    }
                }
            }
            tracing::error!(to = %mail.to, subject = %mail.subject, "mail dropped after 3 attempts");
        });
    }

    /// Waits (up to `limit`) for queued mail to go out.
    pub async fn drain(&self, limit: Duration) {
        self.tasks.close();
        let _ = tokio::time::timeout(limit, self.tasks.wait()).await;
    }
}

impl MailerInner {
    async fn deliver(&self, mail: &Mail) -> anyhow::Result<()> {
        let Some(transport) = &self.transport else {
            tracing::info!(to = %mail.to, subject = %mail.subject, body = %mail.body, "mail (no smtp_url configured, so it is logged)");
            return Ok(());
        };
        // lettre picks the transfer encoding (quoted-printable for long link lines).
        let body = Body::new(mail.body.clone());
        let message = Message::builder()
            .from(self.from.clone())
            .to(mail.to.parse()?)
            .subject(mail.subject.clone())
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(body)?;
        transport.send(message).await?;
        Ok(())
    }
}
