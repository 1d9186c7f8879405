//! A job's image: inline in the message, or in the images object store (then deleted once
//! the job is done; the bucket's TTL removes what is left).

use bytes::Bytes;
use tandem_core::{
    model_client::ClassifyError,
    slow_job::{ImageRef, SlowJob},
};
use tokio::io::AsyncReadExt as _;

use crate::job::JobContext;

pub async fn load_image(ctx: &JobContext, job: &SlowJob) -> Result<Bytes, ClassifyError> {
    match &job.image {
        ImageRef::Inline(bytes) => Ok(bytes.clone()),
        ImageRef::Object(name) => {
            let mut object = ctx.images.get(name).await.map_err(|e| {
                if e.kind() == async_nats::jetstream::object_store::GetErrorKind::NotFound {
                    ClassifyError::Rejected(format!(
                        "the job's image {name:?} is gone from the store"
                    ))
                } else {
                    ClassifyError::Unavailable(format!("image store: {e}"))
                }
            })?;
            let mut buffer = Vec::new();
            object
                .read_to_end(&mut buffer)
                .await
                .map_err(|e| ClassifyError::Unavailable(format!("image store: {e}")))?;
            Ok(Bytes::from(buffer))
        }
    }
}

pub async fn forget_image(ctx: &JobContext, job: &SlowJob) {
    if let ImageRef::Object(name) = &job.image
        && let Err(e) = ctx.images.delete(name).await
    {
        tracing::debug!(error = %e, "image object not deleted (expires with the bucket's TTL)");
    }
}
