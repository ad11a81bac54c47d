//! The real supervisor behind the HTTP layer's [`Backend`] trait.

use faultline_core::protocol::{ClientRequest, ClientResponse};
use faultline_core::runtime::{BoxFuture, Connection};
use faultline_core::supervisor::Supervisor;

use super::http::Backend;

impl Backend for Supervisor {
    fn authenticate_user(&self, token: &str) -> Option<String> {
        Supervisor::authenticate_user(self, token)
    }

    fn handle_client(
        &self,
        user: String,
        request: ClientRequest,
    ) -> BoxFuture<'static, ClientResponse> {
        let supervisor = self.clone();
        Box::pin(async move { supervisor.handle_client(&user, request).await })
    }

    fn serve_agent(&self, connection: Connection) -> BoxFuture<'static, ()> {
        let supervisor = self.clone();
        Box::pin(async move { supervisor.serve_agent(connection).await })
    }
}
