//! `idm.v1.AccountService`: people's accounts (admin scope). Replies carry
//! no password and no hash; the audit trail names the account, never a value.

use idm_proto::v1::account_service_server::AccountService;
use idm_proto::v1::{
    Account, CreateAccountRequest, DeleteAccountRequest, DeleteAccountResponse, GetAccountRequest,
    ListAccountsRequest, ListAccountsResponse, Scope, SetAccountEnabledRequest,
    SetAccountPasswordRequest, SetAccountRoleRequest,
};
use tonic::{Request, Response, Status};

use super::auth::{caller, parse_scope, scope_name};
use super::{timestamp, trail};
use crate::accounts::{Accounts, rules};
use crate::store::AccountRecord;

pub struct AccountApi {
    pub accounts: Accounts,
}

fn to_proto(record: AccountRecord) -> Account {
    Account {
        name: format!("{}{}", rules::PREFIX, record.name),
        id: record.name,
        role: parse_scope(&record.role)
            .unwrap_or(Scope::Unspecified)
            .into(),
        enabled: record.enabled,
        create_time: timestamp(&record.created),
        last_login_time: record.last_login.as_deref().and_then(timestamp),
    }
}

/// Names the target and checks the caller is an admin.
fn admin<T>(request: &Request<T>, name: &str) -> Result<(), Status> {
    trail::target_named(request, rules::PREFIX, name);
    caller(request)?.require(Scope::Admin)
}

#[tonic::async_trait]
impl AccountService for AccountApi {
    async fn create_account(
        &self,
        request: Request<CreateAccountRequest>,
    ) -> Result<Response<Account>, Status> {
        let given = request.get_ref();
        admin(&request, &given.name)?;
        let role = Scope::try_from(given.role).unwrap_or(Scope::Unspecified);
        trail::detail(&request, &format!("role {}", scope_name(role)));
        let account = self
            .accounts
            .create(&given.name, &given.password, role)
            .await?;
        Ok(Response::new(to_proto(account)))
    }

    async fn list_accounts(
        &self,
        request: Request<ListAccountsRequest>,
    ) -> Result<Response<ListAccountsResponse>, Status> {
        caller(&request)?.require(Scope::Admin)?;
        let accounts = self
            .accounts
            .list()
            .await?
            .into_iter()
            .map(to_proto)
            .collect();
        Ok(Response::new(ListAccountsResponse { accounts }))
    }

    async fn get_account(
        &self,
        request: Request<GetAccountRequest>,
    ) -> Result<Response<Account>, Status> {
        caller(&request)?.require(Scope::Admin)?;
        let account = self.accounts.get(&request.get_ref().name).await?;
        Ok(Response::new(to_proto(account)))
    }

    async fn set_account_password(
        &self,
        request: Request<SetAccountPasswordRequest>,
    ) -> Result<Response<Account>, Status> {
        let given = request.get_ref();
        admin(&request, &given.name)?;
        let account = self
            .accounts
            .set_password(&given.name, &given.password)
            .await?;
        Ok(Response::new(to_proto(account)))
    }

    async fn set_account_enabled(
        &self,
        request: Request<SetAccountEnabledRequest>,
    ) -> Result<Response<Account>, Status> {
        let given = request.get_ref();
        if !given.enabled {
            trail::action(&request, "account.disable");
        }
        admin(&request, &given.name)?;
        let account = self
            .accounts
            .set_enabled(&given.name, given.enabled)
            .await?;
        Ok(Response::new(to_proto(account)))
    }

    async fn set_account_role(
        &self,
        request: Request<SetAccountRoleRequest>,
    ) -> Result<Response<Account>, Status> {
        let given = request.get_ref();
        admin(&request, &given.name)?;
        let role = Scope::try_from(given.role).unwrap_or(Scope::Unspecified);
        trail::detail(&request, &format!("role {}", scope_name(role)));
        let account = self.accounts.set_role(&given.name, role).await?;
        Ok(Response::new(to_proto(account)))
    }

    async fn delete_account(
        &self,
        request: Request<DeleteAccountRequest>,
    ) -> Result<Response<DeleteAccountResponse>, Status> {
        admin(&request, &request.get_ref().name)?;
        self.accounts.delete(&request.get_ref().name).await?;
        Ok(Response::new(DeleteAccountResponse {}))
    }
}
