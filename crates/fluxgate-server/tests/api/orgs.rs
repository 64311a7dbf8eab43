//! Organizations, members, roles, invitations and the audit log over real HTTP, on SQLite and
//! PostgreSQL: each role's allowed and refused actions, escalation attempts, cross-org access,
//! invitations, the last-owner rule and the audit trail.

use fluxgate_testkit::{body, expect_error, send, Backend, TestApp, PASSWORD};
use reqwest::{Method, Response};
use serde_json::{json, Value};
use std::time::Duration;

both_backends!(
    orgs_are_created_read_renamed_and_deleted,
    each_role_can_do_what_it_holds_and_nothing_else,
    nobody_grants_more_than_they_hold,
    other_orgs_answer_404_never_403,
    invitations_go_to_one_address_once,
    expired_invitations_cannot_be_accepted,
    the_last_owner_can_neither_leave_nor_be_demoted,
    custom_roles_grant_exactly_their_permissions,
    tokens_and_me_carry_the_active_orgs_permissions,
    me_follows_every_change_to_what_it_shows,
    operators_manage_every_org,
    every_action_is_audited_with_actor_and_ip,
    declared_permissions_are_documented_and_enforced,
);

async fn status(
    app: &TestApp,
    method: Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> u16 {
    send(app, method, path, token, body).await.status().as_u16()
}

async fn forbidden(response: Response, permission: &str) {
    let error = expect_error(response, 403, "FORBIDDEN").await;
    assert_eq!(error["required_permission"], permission, "{error}");
}

async fn orgs_are_created_read_renamed_and_deleted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (ada, acme) = app.owner("ada@example.com", "Acme").await;

    let created = send(
        &app,
        Method::POST,
        "/orgs",
        &ada,
        Some(json!({ "name": "  Side project " })),
    )
    .await;
    assert_eq!(created.status(), 201);
    let side = body(created).await["data"].clone();
    assert_eq!(side["name"], "Side project");
    assert_eq!(side["role"], "owner");
    assert_eq!(side["plan"], "free");
    let side_id = side["id"].as_str().unwrap().to_owned();

    let mine = body(send(&app, Method::GET, "/orgs", &ada, None).await).await;
    let ids: Vec<&str> = mine["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&acme.as_str()) && ids.contains(&side_id.as_str()));
    assert!(mine["next_cursor"].is_null());
    // pagination: one at a time, no overlap
    let first = body(send(&app, Method::GET, "/orgs?limit=1", &ada, None).await).await;
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let second = body(
        send(
            &app,
            Method::GET,
            &format!("/orgs?limit=1&cursor={cursor}"),
            &ada,
            None,
        )
        .await,
    )
    .await;
    assert_ne!(first["data"][0]["id"], second["data"][0]["id"]);
    assert!(second["next_cursor"].is_null());
    expect_error(
        send(&app, Method::GET, "/orgs?limit=0", &ada, None).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    expect_error(
        send(&app, Method::GET, "/orgs?limit=abc", &ada, None).await,
        422,
        "VALIDATION_FAILED",
    )
    .await;

    let renamed = send(
        &app,
        Method::PATCH,
        &format!("/orgs/{acme}"),
        &ada,
        Some(json!({ "name": "Acme Inc" })),
    )
    .await;
    assert_eq!(renamed.status(), 200);
    assert_eq!(body(renamed).await["data"]["name"], "Acme Inc");
    let fetched = body(send(&app, Method::GET, &format!("/orgs/{acme}"), &ada, None).await).await;
    assert_eq!(fetched["data"]["name"], "Acme Inc");
    assert_eq!(fetched["data"]["role"], "owner");
    let empty = expect_error(
        send(
            &app,
            Method::PATCH,
            &format!("/orgs/{acme}"),
            &ada,
            Some(json!({ "name": " " })),
        )
        .await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert!(empty["fields"]["name"].is_string());
    // the external id is the operator's to set
    forbidden(
        send(
            &app,
            Method::PATCH,
            &format!("/orgs/{acme}"),
            &ada,
            Some(json!({ "external_id": "cus_1" })),
        )
        .await,
        "admin:orgs",
    )
    .await;
    forbidden(
        send(
            &app,
            Method::POST,
            "/orgs",
            &ada,
            Some(json!({ "name": "X", "external_id": "cus_2" })),
        )
        .await,
        "admin:orgs",
    )
    .await;

    assert_eq!(
        status(
            &app,
            Method::DELETE,
            &format!("/orgs/{side_id}"),
            &ada,
            None
        )
        .await,
        204
    );
    expect_error(
        send(&app, Method::GET, &format!("/orgs/{side_id}"), &ada, None).await,
        404,
        "NOT_FOUND",
    )
    .await;
    let mine = body(send(&app, Method::GET, "/orgs", &ada, None).await).await;
    assert_eq!(mine["data"].as_array().unwrap().len(), 1);
    app.stop().await;
}

async fn each_role_can_do_what_it_holds_and_nothing_else(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.owner("owner@example.com", "Acme").await;
    let admin = app.member(&owner, &org, "admin@example.com", "admin").await;
    let developer = app
        .member(&owner, &org, "dev@example.com", "developer")
        .await;
    let viewer = app
        .member(&owner, &org, "viewer@example.com", "viewer")
        .await;

    // reads every member may do
    for token in [&owner, &admin, &developer, &viewer] {
        assert_eq!(
            status(&app, Method::GET, &format!("/orgs/{org}"), token, None).await,
            200
        );
        assert_eq!(
            status(
                &app,
                Method::GET,
                &format!("/orgs/{org}/members"),
                token,
                None
            )
            .await,
            200
        );
        assert_eq!(
            status(
                &app,
                Method::GET,
                &format!("/orgs/{org}/roles"),
                token,
                None
            )
            .await,
            200
        );
        assert_eq!(
            status(
                &app,
                Method::GET,
                &format!("/orgs/{org}/invitations"),
                token,
                None
            )
            .await,
            200
        );
    }
    let members = body(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{org}/members"),
            &viewer,
            None,
        )
        .await,
    )
    .await;
    let roles: Vec<&str> = members["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles.len(), 4);
    for role in ["owner", "admin", "developer", "viewer"] {
        assert!(roles.contains(&role), "{roles:?}");
    }

    // (who, what, expected): 2xx or the permission named in the 403
    let role_body = |name: &str| Some(json!({ "name": name, "permissions": ["keys:read"] }));
    type Case<'a> = (
        &'a String,
        Method,
        String,
        Option<Value>,
        Result<u16, &'a str>,
    );
    let cases: Vec<Case> = vec![
        (
            &admin,
            Method::PATCH,
            format!("/orgs/{org}"),
            Some(json!({ "name": "By admin" })),
            Ok(200),
        ),
        (
            &developer,
            Method::PATCH,
            format!("/orgs/{org}"),
            Some(json!({ "name": "By dev" })),
            Err("org:write"),
        ),
        (
            &viewer,
            Method::PATCH,
            format!("/orgs/{org}"),
            Some(json!({ "name": "By viewer" })),
            Err("org:write"),
        ),
        (
            &admin,
            Method::POST,
            format!("/orgs/{org}/invitations"),
            Some(json!({ "email": "a1@example.com", "role": "viewer" })),
            Ok(201),
        ),
        (
            &developer,
            Method::POST,
            format!("/orgs/{org}/invitations"),
            Some(json!({ "email": "d1@example.com", "role": "viewer" })),
            Err("members:write"),
        ),
        (
            &viewer,
            Method::POST,
            format!("/orgs/{org}/invitations"),
            Some(json!({ "email": "v1@example.com", "role": "viewer" })),
            Err("members:write"),
        ),
        (
            &admin,
            Method::POST,
            format!("/orgs/{org}/roles"),
            role_body("by-admin"),
            Ok(201),
        ),
        (
            &developer,
            Method::POST,
            format!("/orgs/{org}/roles"),
            role_body("by-dev"),
            Err("roles:write"),
        ),
        (
            &viewer,
            Method::POST,
            format!("/orgs/{org}/roles"),
            role_body("by-viewer"),
            Err("roles:write"),
        ),
        (
            &owner,
            Method::GET,
            format!("/orgs/{org}/audit-log"),
            None,
            Ok(200),
        ),
        (
            &admin,
            Method::GET,
            format!("/orgs/{org}/audit-log"),
            None,
            Ok(200),
        ),
        (
            &developer,
            Method::GET,
            format!("/orgs/{org}/audit-log"),
            None,
            Err("audit:read"),
        ),
        (
            &viewer,
            Method::GET,
            format!("/orgs/{org}/audit-log"),
            None,
            Err("audit:read"),
        ),
        (
            &admin,
            Method::DELETE,
            format!("/orgs/{org}"),
            None,
            Err("org:delete"),
        ),
        (
            &developer,
            Method::DELETE,
            format!("/orgs/{org}"),
            None,
            Err("org:delete"),
        ),
        (
            &viewer,
            Method::PATCH,
            format!("/orgs/{org}/members/x"),
            Some(json!({ "role": "admin" })),
            Err("members:write"),
        ),
    ];
    for (token, method, path, request, expected) in cases {
        let response = send(&app, method.clone(), &path, token, request).await;
        match expected {
            Ok(code) => assert_eq!(response.status().as_u16(), code, "{method} {path}"),
            Err(permission) => forbidden(response, permission).await,
        }
    }
    // the owner may delete the org, and then nobody sees it
    assert_eq!(
        status(&app, Method::DELETE, &format!("/orgs/{org}"), &owner, None).await,
        204
    );
    for token in [&owner, &admin, &viewer] {
        expect_error(
            send(
                &app,
                Method::GET,
                &format!("/orgs/{org}/members"),
                token,
                None,
            )
            .await,
            404,
            "NOT_FOUND",
        )
        .await;
    }
    app.stop().await;
}

async fn user_id_of(app: &TestApp, token: &str) -> String {
    body(send(app, Method::GET, "/auth/me", token, None).await).await["data"]["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn nobody_grants_more_than_they_hold(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.owner("owner@example.com", "Acme").await;
    let admin = app.member(&owner, &org, "admin@example.com", "admin").await;
    let viewer = app
        .member(&owner, &org, "viewer@example.com", "viewer")
        .await;
    let owner_id = user_id_of(&app, &owner).await;
    let admin_id = user_id_of(&app, &admin).await;
    let viewer_id = user_id_of(&app, &viewer).await;
    let members = format!("/orgs/{org}/members");

    // admin → owner, of themselves or of anyone: refused, naming what they lack
    forbidden(
        send(
            &app,
            Method::PATCH,
            &format!("{members}/{admin_id}"),
            &admin,
            Some(json!({ "role": "owner" })),
        )
        .await,
        "*",
    )
    .await;
    forbidden(
        send(
            &app,
            Method::PATCH,
            &format!("{members}/{viewer_id}"),
            &admin,
            Some(json!({ "role": "owner" })),
        )
        .await,
        "*",
    )
    .await;
    // inviting as owner without being one
    forbidden(
        send(
            &app,
            Method::POST,
            &format!("/orgs/{org}/invitations"),
            &admin,
            Some(json!({ "email": "x@example.com", "role": "owner" })),
        )
        .await,
        "*",
    )
    .await;
    // custom roles holding `*`, a wildcard the admin lacks, or org:delete
    for permissions in [json!(["*"]), json!(["keys:*"]), json!(["org:delete"])] {
        let response = send(
            &app,
            Method::POST,
            &format!("/orgs/{org}/roles"),
            &admin,
            Some(json!({ "name": "sneaky", "permissions": permissions })),
        )
        .await;
        assert_eq!(response.status(), 403, "{permissions}");
    }
    // touching a member who outranks you
    forbidden(
        send(
            &app,
            Method::PATCH,
            &format!("{members}/{owner_id}"),
            &admin,
            Some(json!({ "role": "viewer" })),
        )
        .await,
        "*",
    )
    .await;
    forbidden(
        send(
            &app,
            Method::DELETE,
            &format!("{members}/{owner_id}"),
            &admin,
            None,
        )
        .await,
        "*",
    )
    .await;
    // no customer org can hold operator permissions, not even its owner
    forbidden(
        send(
            &app,
            Method::POST,
            &format!("/orgs/{org}/roles"),
            &owner,
            Some(json!({ "name": "ops", "permissions": ["admin:orgs"] })),
        )
        .await,
        "admin:orgs",
    )
    .await;
    // unknown permissions and roles are input errors
    let unknown = expect_error(
        send(
            &app,
            Method::POST,
            &format!("/orgs/{org}/roles"),
            &owner,
            Some(json!({ "name": "odd", "permissions": ["keys:read", "keys:frobnicate"] })),
        )
        .await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert!(unknown["fields"]["permissions[1]"].is_string(), "{unknown}");
    let no_role = expect_error(
        send(
            &app,
            Method::PATCH,
            &format!("{members}/{viewer_id}"),
            &owner,
            Some(json!({ "role": "emperor" })),
        )
        .await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert!(no_role["fields"]["role"].is_string());

    // an admin with roles:write cannot widen a role beyond what they hold
    let created = send(
        &app,
        Method::POST,
        &format!("/orgs/{org}/roles"),
        &owner,
        Some(json!({ "name": "auditor", "permissions": ["audit:read"] })),
    )
    .await;
    assert_eq!(created.status(), 201);
    let role_id = body(created).await["data"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    forbidden(
        send(
            &app,
            Method::PATCH,
            &format!("/orgs/{org}/roles/{role_id}"),
            &admin,
            Some(json!({ "permissions": ["audit:read", "org:delete"] })),
        )
        .await,
        "org:delete",
    )
    .await;
    // a custom role with members:write but without keys:write cannot invite as developer
    let limited = send(
        &app,
        Method::POST,
        &format!("/orgs/{org}/roles"),
        &owner,
        Some(json!({ "name": "recruiter", "permissions": ["members:read", "members:write"] })),
    )
    .await;
    assert_eq!(limited.status(), 201);
    assert_eq!(
        status(
            &app,
            Method::PATCH,
            &format!("{members}/{viewer_id}"),
            &owner,
            Some(json!({ "role": "recruiter" }))
        )
        .await,
        200
    );
    let response = send(
        &app,
        Method::POST,
        &format!("/orgs/{org}/invitations"),
        &viewer,
        Some(json!({ "email": "y@example.com", "role": "developer" })),
    )
    .await;
    assert_eq!(response.status(), 403);
    assert_eq!(
        status(
            &app,
            Method::POST,
            &format!("/orgs/{org}/invitations"),
            &viewer,
            Some(json!({ "email": "y@example.com", "role": "recruiter" }))
        )
        .await,
        201,
        "a role equal to one's own may be granted"
    );
    app.stop().await;
}

async fn other_orgs_answer_404_never_403(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (alice, a_org) = app.owner("alice@example.com", "Alpha").await;
    let (bob, b_org) = app.owner("bob@example.com", "Beta").await;
    let bob_id = user_id_of(&app, &bob).await;
    let a_role = body(
        send(
            &app,
            Method::POST,
            &format!("/orgs/{a_org}/roles"),
            &alice,
            Some(json!({ "name": "r", "permissions": ["keys:read"] })),
        )
        .await,
    )
    .await["data"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a_invite = body(
        send(
            &app,
            Method::POST,
            &format!("/orgs/{a_org}/invitations"),
            &alice,
            Some(json!({ "email": "z@example.com", "role": "viewer" })),
        )
        .await,
    )
    .await["data"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // bob, owner of Beta, reaching into Alpha by id: every route says 404
    let attempts: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/orgs/{a_org}"), None),
        (
            Method::PATCH,
            format!("/orgs/{a_org}"),
            Some(json!({ "name": "pwned" })),
        ),
        (Method::DELETE, format!("/orgs/{a_org}"), None),
        (Method::GET, format!("/orgs/{a_org}/members"), None),
        (
            Method::PATCH,
            format!("/orgs/{a_org}/members/{bob_id}"),
            Some(json!({ "role": "owner" })),
        ),
        (
            Method::DELETE,
            format!("/orgs/{a_org}/members/{bob_id}"),
            None,
        ),
        (Method::GET, format!("/orgs/{a_org}/roles"), None),
        (
            Method::POST,
            format!("/orgs/{a_org}/roles"),
            Some(json!({ "name": "x", "permissions": [] })),
        ),
        (
            Method::PATCH,
            format!("/orgs/{a_org}/roles/{a_role}"),
            Some(json!({ "permissions": ["*"] })),
        ),
        (
            Method::DELETE,
            format!("/orgs/{a_org}/roles/{a_role}"),
            None,
        ),
        (Method::GET, format!("/orgs/{a_org}/invitations"), None),
        (
            Method::POST,
            format!("/orgs/{a_org}/invitations"),
            Some(json!({ "email": "bob2@example.com", "role": "owner" })),
        ),
        (
            Method::DELETE,
            format!("/orgs/{a_org}/invitations/{a_invite}"),
            None,
        ),
        (Method::GET, format!("/orgs/{a_org}/audit-log"), None),
        // Alpha's resources through Beta's path
        (
            Method::PATCH,
            format!("/orgs/{b_org}/roles/{a_role}"),
            Some(json!({ "name": "mine" })),
        ),
        (
            Method::DELETE,
            format!("/orgs/{b_org}/roles/{a_role}"),
            None,
        ),
        (
            Method::DELETE,
            format!("/orgs/{b_org}/invitations/{a_invite}"),
            None,
        ),
        // ids that do not exist or are not ids
        (
            Method::GET,
            "/orgs/org_01ARZ3NDEKTSV4RRFFQ69G5FAV".to_string(),
            None,
        ),
        (Method::GET, "/orgs/not-an-id/members".to_string(), None),
    ];
    for (method, path, request) in attempts {
        let response = send(&app, method.clone(), &path, &bob, request).await;
        assert_eq!(response.status(), 404, "{method} {path}");
        assert_eq!(body(response).await["error"]["code"], "NOT_FOUND");
    }
    // and nothing changed in Alpha
    let alpha = body(send(&app, Method::GET, &format!("/orgs/{a_org}"), &alice, None).await).await;
    assert_eq!(alpha["data"]["name"], "Alpha");
    let invitations = body(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{a_org}/invitations"),
            &alice,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(invitations["data"].as_array().unwrap().len(), 1);
    app.stop().await;
}

async fn invitations_go_to_one_address_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.owner("owner@example.com", "Acme").await;
    let bob = app.user("bob@example.com").await;
    let eve = app.user("eve@example.com").await;

    let token = app
        .invite(&owner, &org, "Bob@Example.com", "developer")
        .await;
    let mail = app.mail.wait_for("bob@example.com", "invited").await;
    assert!(mail.subject.contains("Acme"), "{}", mail.subject);
    assert!(
        mail.body
            .contains(&format!("/invitations/accept?token={token}")),
        "{}",
        mail.body
    );
    // a second open invitation to the same address is refused
    expect_error(
        send(
            &app,
            Method::POST,
            &format!("/orgs/{org}/invitations"),
            &owner,
            Some(json!({ "email": "bob@example.com", "role": "viewer" })),
        )
        .await,
        409,
        "CONFLICT",
    )
    .await;
    let listed = body(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{org}/invitations"),
            &owner,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(listed["data"][0]["email"], "bob@example.com");
    assert_eq!(listed["data"][0]["role"], "developer");
    assert!(
        listed["data"][0].get("token").is_none() && listed["data"][0].get("token_hash").is_none()
    );

    // someone else holding the token cannot use it
    let wrong = send(
        &app,
        Method::POST,
        &format!("/invitations/{token}/accept"),
        &eve,
        None,
    )
    .await;
    expect_error(wrong, 403, "FORBIDDEN").await;
    // anonymous cannot either
    expect_error(
        app.post(&format!("/api/v1/invitations/{token}/accept"), json!({}))
            .await,
        401,
        "UNAUTHORIZED",
    )
    .await;

    let accepted = send(
        &app,
        Method::POST,
        &format!("/invitations/{token}/accept"),
        &bob,
        None,
    )
    .await;
    assert_eq!(accepted.status(), 200);
    let joined = body(accepted).await["data"].clone();
    assert_eq!(joined["id"], org.as_str());
    assert_eq!(joined["role"], "developer");
    // reused
    expect_error(
        send(
            &app,
            Method::POST,
            &format!("/invitations/{token}/accept"),
            &bob,
            None,
        )
        .await,
        404,
        "NOT_FOUND",
    )
    .await;
    // bob is a member now: inviting him again is a conflict
    expect_error(
        send(
            &app,
            Method::POST,
            &format!("/orgs/{org}/invitations"),
            &owner,
            Some(json!({ "email": "bob@example.com", "role": "viewer" })),
        )
        .await,
        409,
        "CONFLICT",
    )
    .await;
    let me = body(send(&app, Method::GET, "/auth/me", &bob, None).await).await;
    assert_eq!(me["data"]["memberships"][0]["role"], "developer");

    // a cancelled invitation's token is dead
    let carol = app.user("carol@example.com").await;
    let carol_token = app
        .invite(&owner, &org, "carol@example.com", "viewer")
        .await;
    let open = body(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{org}/invitations"),
            &owner,
            None,
        )
        .await,
    )
    .await;
    let carol_invitation = open["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["email"] == "carol@example.com")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // resending mails a new token; the first link stops working
    let resent = send(
        &app,
        Method::POST,
        &format!("/orgs/{org}/invitations/{carol_invitation}/resend"),
        &owner,
        None,
    )
    .await;
    assert_eq!(resent.status(), 200);
    assert_eq!(body(resent).await["data"]["id"], carol_invitation.as_str());
    let second_mail = app
        .mail
        .wait_for_nth("carol@example.com", "invited", 2)
        .await;
    let carol_second_token = fluxgate_testkit::smtp::token_in(&second_mail.body);
    assert_ne!(carol_second_token, carol_token);
    expect_error(
        send(
            &app,
            Method::POST,
            &format!("/invitations/{carol_token}/accept"),
            &carol,
            None,
        )
        .await,
        404,
        "NOT_FOUND",
    )
    .await;
    assert_eq!(
        status(
            &app,
            Method::DELETE,
            &format!("/orgs/{org}/invitations/{carol_invitation}"),
            &owner,
            None
        )
        .await,
        204
    );
    assert_eq!(
        status(
            &app,
            Method::DELETE,
            &format!("/orgs/{org}/invitations/{carol_invitation}"),
            &owner,
            None
        )
        .await,
        404
    );
    expect_error(
        send(
            &app,
            Method::POST,
            &format!("/invitations/{carol_second_token}/accept"),
            &carol,
            None,
        )
        .await,
        404,
        "NOT_FOUND",
    )
    .await;
    // an invented token
    expect_error(
        send(
            &app,
            Method::POST,
            "/invitations/not-a-real-token/accept",
            &carol,
            None,
        )
        .await,
        404,
        "NOT_FOUND",
    )
    .await;
    app.stop().await;
}

async fn expired_invitations_cannot_be_accepted(backend: Backend) {
    let app = TestApp::spawn_with(backend, |t| {
        fluxgate_testkit::set_config(t, "auth.invitation_ttl", "3s"); // whole seconds: 2-3 s of life
    })
    .await;
    let (owner, org) = app.owner("owner@example.com", "Acme").await;
    let dave = app.user("dave@example.com").await;
    let token = app.invite(&owner, &org, "dave@example.com", "viewer").await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    expect_error(
        send(
            &app,
            Method::POST,
            &format!("/invitations/{token}/accept"),
            &dave,
            None,
        )
        .await,
        404,
        "NOT_FOUND",
    )
    .await;
    let open = body(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{org}/invitations"),
            &owner,
            None,
        )
        .await,
    )
    .await;
    assert!(
        open["data"].as_array().unwrap().is_empty(),
        "expired invitations are not open"
    );
    // an expired invitation does not block a new one
    let again = app.invite(&owner, &org, "dave@example.com", "viewer").await;
    assert_eq!(
        status(
            &app,
            Method::POST,
            &format!("/invitations/{again}/accept"),
            &dave,
            None
        )
        .await,
        200
    );
    app.stop().await;
}

async fn the_last_owner_can_neither_leave_nor_be_demoted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.owner("owner@example.com", "Acme").await;
    let owner_id = user_id_of(&app, &owner).await;
    let members = format!("/orgs/{org}/members");

    expect_error(
        send(
            &app,
            Method::DELETE,
            &format!("{members}/{owner_id}"),
            &owner,
            None,
        )
        .await,
        409,
        "CONFLICT",
    )
    .await;
    expect_error(
        send(
            &app,
            Method::PATCH,
            &format!("{members}/{owner_id}"),
            &owner,
            Some(json!({ "role": "admin" })),
        )
        .await,
        409,
        "CONFLICT",
    )
    .await;

    // a viewer may leave by themselves, without members:write
    let viewer = app
        .member(&owner, &org, "viewer@example.com", "viewer")
        .await;
    let viewer_id = user_id_of(&app, &viewer).await;
    assert_eq!(
        status(
            &app,
            Method::DELETE,
            &format!("{members}/{viewer_id}"),
            &viewer,
            None
        )
        .await,
        204
    );
    expect_error(
        send(&app, Method::GET, &format!("/orgs/{org}"), &viewer, None).await,
        404,
        "NOT_FOUND",
    )
    .await;

    // with a second owner, two owners demoting each other at once: exactly one succeeds
    let second = app
        .member(&owner, &org, "second@example.com", "owner")
        .await;
    let second_id = user_id_of(&app, &second).await;
    let (second_path, owner_path) = (
        format!("{members}/{second_id}"),
        format!("{members}/{owner_id}"),
    );
    let (a, b) = tokio::join!(
        send(
            &app,
            Method::PATCH,
            &second_path,
            &owner,
            Some(json!({ "role": "admin" }))
        ),
        send(
            &app,
            Method::PATCH,
            &owner_path,
            &second,
            Some(json!({ "role": "admin" }))
        ),
    );
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort();
    assert!(
        statuses == [200, 409] || statuses == [200, 403],
        "{statuses:?}"
    );
    // whichever of the two was demoted is an admin now, and still reads the members
    let listed = body(send(&app, Method::GET, &members, &owner, None).await).await;
    let owners = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "owner")
        .count();
    assert_eq!(owners, 1, "exactly one owner remains: {listed}");
    app.stop().await;
}

async fn custom_roles_grant_exactly_their_permissions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.owner("owner@example.com", "Acme").await;
    let created = send(
        &app,
        Method::POST,
        &format!("/orgs/{org}/roles"),
        &owner,
        Some(json!({ "name": "auditor", "description": "Reads the audit log", "permissions": ["audit:read", "org:read"] })),
    )
    .await;
    assert_eq!(created.status(), 201);
    let role = body(created).await["data"].clone();
    assert_eq!(role["builtin"], false);
    let role_id = role["id"].as_str().unwrap().to_owned();
    expect_error(
        send(
            &app,
            Method::POST,
            &format!("/orgs/{org}/roles"),
            &owner,
            Some(json!({ "name": "auditor", "permissions": [] })),
        )
        .await,
        409,
        "CONFLICT",
    )
    .await;
    let builtin_name = expect_error(
        send(
            &app,
            Method::POST,
            &format!("/orgs/{org}/roles"),
            &owner,
            Some(json!({ "name": "admin", "permissions": [] })),
        )
        .await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert!(builtin_name["fields"]["name"].is_string());

    let auditor = app
        .member(&owner, &org, "auditor@example.com", "auditor")
        .await;
    assert_eq!(
        status(
            &app,
            Method::GET,
            &format!("/orgs/{org}/audit-log"),
            &auditor,
            None
        )
        .await,
        200
    );
    forbidden(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{org}/members"),
            &auditor,
            None,
        )
        .await,
        "members:read",
    )
    .await;

    // renaming carries over to the members; changing permissions takes effect at once
    let renamed = send(
        &app,
        Method::PATCH,
        &format!("/orgs/{org}/roles/{role_id}"),
        &owner,
        Some(json!({ "name": "compliance", "permissions": ["audit:read", "org:read", "members:read"] })),
    )
    .await;
    assert_eq!(renamed.status(), 200);
    let members = body(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{org}/members"),
            &auditor,
            None,
        )
        .await,
    )
    .await;
    assert!(
        members["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["role"] == "compliance"),
        "{members}"
    );
    let roles = body(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{org}/roles"),
            &owner,
            None,
        )
        .await,
    )
    .await;
    let names: Vec<&str> = roles["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["owner", "admin", "developer", "viewer", "compliance"]
    );

    // a role still held cannot be deleted; once nobody holds it, it can
    expect_error(
        send(
            &app,
            Method::DELETE,
            &format!("/orgs/{org}/roles/{role_id}"),
            &owner,
            None,
        )
        .await,
        409,
        "CONFLICT",
    )
    .await;
    let auditor_id = user_id_of(&app, &auditor).await;
    assert_eq!(
        status(
            &app,
            Method::PATCH,
            &format!("/orgs/{org}/members/{auditor_id}"),
            &owner,
            Some(json!({ "role": "viewer" }))
        )
        .await,
        200
    );
    assert_eq!(
        status(
            &app,
            Method::DELETE,
            &format!("/orgs/{org}/roles/{role_id}"),
            &owner,
            None
        )
        .await,
        204
    );
    app.stop().await;
}

fn claims_of(jwt: &str) -> Value {
    use base64::Engine;
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}

async fn tokens_and_me_carry_the_active_orgs_permissions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.owner("owner@example.com", "Acme").await;
    let (_, own_org) = app.owner("val@example.com", "Val's").await;
    let val = app.login("val@example.com", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    app.call(
        Method::POST,
        &format!(
            "/api/v1/invitations/{}/accept",
            app.invite(&owner, &org, "val@example.com", "viewer").await
        ),
        Some(&val),
        None,
    )
    .await;

    let switched = send(
        &app,
        Method::POST,
        "/auth/switch-org",
        &val,
        Some(json!({ "org_id": org })),
    )
    .await;
    assert_eq!(switched.status(), 200);
    let access = body(switched).await["data"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let claims = claims_of(&access);
    assert_eq!(claims["org"], org.as_str());
    assert_eq!(claims["role"], "viewer");
    let perms: Vec<&str> = claims["perms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert_eq!(
        perms,
        [
            "keys:read",
            "members:read",
            "org:read",
            "roles:read",
            "usage:read"
        ]
    );
    let me = body(send(&app, Method::GET, "/auth/me", &access, None).await).await;
    assert_eq!(me["data"]["permissions"], json!(perms));
    assert_eq!(me["data"]["active_org"]["role"], "viewer");

    let back = body(
        send(
            &app,
            Method::POST,
            "/auth/switch-org",
            &access,
            Some(json!({ "org_id": own_org })),
        )
        .await,
    )
    .await;
    let claims = claims_of(back["data"]["access_token"].as_str().unwrap());
    assert_eq!(claims["role"], "owner");
    assert!(claims["perms"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p == "org:delete"));
    assert!(!claims["perms"]
        .as_array()
        .unwrap()
        .iter()
        .any(|p| p == "admin:orgs"));
    app.stop().await;
}

/// `GET /auth/me` is answered from the session's view once read; every change to what it
/// shows — the user, their role, their role's permissions, their membership — shows on the
/// very next call.
async fn me_follows_every_change_to_what_it_shows(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.owner("owner@example.com", "Acme").await;
    let role = body(
        send(
            &app,
            Method::POST,
            &format!("/orgs/{org}/roles"),
            &owner,
            Some(json!({ "name": "auditor", "permissions": ["audit:read", "org:read"] })),
        )
        .await,
    )
    .await["data"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let member = app.member(&owner, &org, "val@example.com", "auditor").await;
    let val_id = user_id_of(&app, &member).await;
    let switched = send(
        &app,
        Method::POST,
        "/auth/switch-org",
        &member,
        Some(json!({ "org_id": org })),
    )
    .await;
    let val = body(switched).await["data"]["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let me = || async {
        body(send(&app, Method::GET, "/auth/me", &val, None).await).await["data"].clone()
    };
    let first = me().await;
    assert_eq!(first["active_org"]["role"], "auditor");
    assert_eq!(first["permissions"], json!(["audit:read", "org:read"]));
    assert_eq!(me().await, first, "a second read answers the same");

    // the role's permissions change
    let patched = send(
        &app,
        Method::PATCH,
        &format!("/orgs/{org}/roles/{role}"),
        &owner,
        Some(json!({ "permissions": ["audit:read", "keys:read", "org:read"] })),
    )
    .await;
    assert_eq!(patched.status(), 200);
    assert_eq!(
        me().await["permissions"],
        json!(["audit:read", "keys:read", "org:read"])
    );
    // the user renames themselves
    let renamed = send(
        &app,
        Method::PATCH,
        "/auth/me",
        &val,
        Some(json!({ "name": "Val" })),
    )
    .await;
    assert_eq!(renamed.status(), 200);
    assert_eq!(me().await["user"]["name"], "Val");
    // their role changes
    let demoted = send(
        &app,
        Method::PATCH,
        &format!("/orgs/{org}/members/{val_id}"),
        &owner,
        Some(json!({ "role": "viewer" })),
    )
    .await;
    assert_eq!(demoted.status(), 200);
    let after = me().await;
    assert_eq!(after["active_org"]["role"], "viewer");
    assert!(after["permissions"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p != "audit:read"));
    // they are removed
    let removed = send(
        &app,
        Method::DELETE,
        &format!("/orgs/{org}/members/{val_id}"),
        &owner,
        None,
    )
    .await;
    assert_eq!(removed.status(), 204);
    let gone = me().await;
    assert!(gone["active_org"].is_null(), "{gone}");
    assert_eq!(gone["memberships"], json!([]));
    assert_eq!(gone["permissions"], json!([]));
    app.stop().await;
}

async fn operators_manage_every_org(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    fluxgate_server::admin::bootstrap(&app.config, "ops@example.com", PASSWORD)
        .await
        .unwrap();
    let ops = app.login("ops@example.com", PASSWORD).await["access_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (customer, org) = app.owner("ada@example.com", "Acme").await;
    let (_, other) = app.owner("bob@example.com", "Beta").await;

    let all = body(send(&app, Method::GET, "/admin/orgs", &ops, None).await).await;
    assert_eq!(
        all["data"].as_array().unwrap().len(),
        3,
        "operator org and two customers"
    );
    forbidden(
        send(&app, Method::GET, "/admin/orgs", &customer, None).await,
        "admin:orgs",
    )
    .await;
    forbidden(
        send(&app, Method::GET, "/admin/audit-log", &customer, None).await,
        "admin:users",
    )
    .await;

    // operators read any org and set its external id; ids are unique
    assert_eq!(
        status(
            &app,
            Method::GET,
            &format!("/orgs/{org}/members"),
            &ops,
            None
        )
        .await,
        200
    );
    let set = send(
        &app,
        Method::PATCH,
        &format!("/orgs/{org}"),
        &ops,
        Some(json!({ "external_id": "cus_42" })),
    )
    .await;
    assert_eq!(set.status(), 200);
    assert_eq!(body(set).await["data"]["external_id"], "cus_42");
    expect_error(
        send(
            &app,
            Method::PATCH,
            &format!("/orgs/{other}"),
            &ops,
            Some(json!({ "external_id": "cus_42" })),
        )
        .await,
        409,
        "CONFLICT",
    )
    .await;
    let cleared = send(
        &app,
        Method::PATCH,
        &format!("/orgs/{org}"),
        &ops,
        Some(json!({ "external_id": null })),
    )
    .await;
    assert!(body(cleared).await["data"]["external_id"].is_null());
    // the operator org cannot be deleted
    let ops_org = body(send(&app, Method::GET, "/auth/me", &ops, None).await).await["data"]
        ["active_org"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    expect_error(
        send(
            &app,
            Method::DELETE,
            &format!("/orgs/{ops_org}"),
            &ops,
            None,
        )
        .await,
        409,
        "CONFLICT",
    )
    .await;

    // the instance log holds account events (logins) that belong to no org
    let log = body(
        send(
            &app,
            Method::GET,
            "/admin/audit-log?action=user.login",
            &ops,
            None,
        )
        .await,
    )
    .await;
    assert!(log["data"].as_array().unwrap().len() >= 3, "{log}");
    let refused = expect_error(
        send(
            &app,
            Method::GET,
            "/admin/audit-log?org_id=usr_01ARZ3NDEKTSV4RRFFQ69G5FAV",
            &ops,
            None,
        )
        .await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert!(refused["fields"]["org_id"].is_string(), "{refused}");
    app.stop().await;
}

async fn every_action_is_audited_with_actor_and_ip(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (owner, org) = app.owner("owner@example.com", "Acme").await;
    let owner_id = user_id_of(&app, &owner).await;
    let invite_token = app.invite(&owner, &org, "bob@example.com", "viewer").await;
    let bob = app.user("bob@example.com").await;
    assert_eq!(
        status(
            &app,
            Method::POST,
            &format!("/invitations/{invite_token}/accept"),
            &bob,
            None
        )
        .await,
        200
    );
    let bob_id = user_id_of(&app, &bob).await;
    send(
        &app,
        Method::PATCH,
        &format!("/orgs/{org}"),
        &owner,
        Some(json!({ "name": "Acme 2" })),
    )
    .await;
    send(
        &app,
        Method::PATCH,
        &format!("/orgs/{org}/members/{bob_id}"),
        &owner,
        Some(json!({ "role": "developer" })),
    )
    .await;
    let role = body(
        send(
            &app,
            Method::POST,
            &format!("/orgs/{org}/roles"),
            &owner,
            Some(json!({ "name": "r1", "permissions": ["keys:read"] })),
        )
        .await,
    )
    .await;
    let role_id = role["data"]["id"].as_str().unwrap();
    send(
        &app,
        Method::PATCH,
        &format!("/orgs/{org}/roles/{role_id}"),
        &owner,
        Some(json!({ "permissions": ["keys:read", "usage:read"] })),
    )
    .await;
    send(
        &app,
        Method::DELETE,
        &format!("/orgs/{org}/roles/{role_id}"),
        &owner,
        None,
    )
    .await;
    let carol_token = app
        .invite(&owner, &org, "carol@example.com", "viewer")
        .await;
    let open = body(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{org}/invitations"),
            &owner,
            None,
        )
        .await,
    )
    .await;
    let carol_invitation = open["data"][0]["id"].as_str().unwrap().to_owned();
    send(
        &app,
        Method::DELETE,
        &format!("/orgs/{org}/invitations/{carol_invitation}"),
        &owner,
        None,
    )
    .await;
    send(
        &app,
        Method::DELETE,
        &format!("/orgs/{org}/members/{bob_id}"),
        &owner,
        None,
    )
    .await;

    let log = body(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{org}/audit-log?limit=200"),
            &owner,
            None,
        )
        .await,
    )
    .await;
    let entries = log["data"].as_array().unwrap();
    let expect = [
        ("org.created", &owner_id),
        ("member.invited", &owner_id),
        ("member.joined", &bob_id),
        ("org.updated", &owner_id),
        ("member.role_changed", &owner_id),
        ("role.created", &owner_id),
        ("role.updated", &owner_id),
        ("role.deleted", &owner_id),
        ("invitation.canceled", &owner_id),
        ("member.removed", &owner_id),
    ];
    for (action, actor) in expect {
        let entry = entries
            .iter()
            .find(|e| e["action"] == action)
            .unwrap_or_else(|| panic!("no {action} in {log}"));
        assert_eq!(entry["actor"]["id"], actor.as_str(), "{entry}");
        assert_eq!(entry["actor"]["type"], "user");
        assert_eq!(entry["org_id"], org.as_str());
        assert_eq!(entry["ip"], "127.0.0.1", "{entry}");
        assert!(entry["created_at"].is_string());
    }
    let changed = entries
        .iter()
        .find(|e| e["action"] == "member.role_changed")
        .unwrap();
    assert_eq!(
        changed["data"],
        json!({ "from": "viewer", "to": "developer" })
    );
    assert_eq!(changed["target"], json!({ "type": "user", "id": bob_id }));
    // newest first
    let ids: Vec<&str> = entries.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let mut sorted = ids.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(ids, sorted);

    // filters and pages
    let only = body(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{org}/audit-log?action=member.invited"),
            &owner,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(only["data"].as_array().unwrap().len(), 2);
    let by_bob = body(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{org}/audit-log?actor={bob_id}"),
            &owner,
            None,
        )
        .await,
    )
    .await;
    assert_eq!(by_bob["data"].as_array().unwrap().len(), 1);
    let future = body(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{org}/audit-log?from=2999-01-01T00:00:00Z"),
            &owner,
            None,
        )
        .await,
    )
    .await;
    assert!(future["data"].as_array().unwrap().is_empty());
    let past = body(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{org}/audit-log?to=2000-01-01T00:00:00Z"),
            &owner,
            None,
        )
        .await,
    )
    .await;
    assert!(past["data"].as_array().unwrap().is_empty());
    let bad = expect_error(
        send(
            &app,
            Method::GET,
            &format!("/orgs/{org}/audit-log?from=yesterday"),
            &owner,
            None,
        )
        .await,
        422,
        "VALIDATION_FAILED",
    )
    .await;
    assert!(bad["fields"]["from"].is_string());
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/orgs/{org}/audit-log?limit=3&cursor={c}"),
            None => format!("/orgs/{org}/audit-log?limit=3"),
        };
        let page = body(send(&app, Method::GET, &path, &owner, None).await).await;
        paged.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged, ids, "pages cover the log exactly once");

    // no secret anywhere in the log: not the invitation tokens, not the password
    let everything = log.to_string();
    for secret in [invite_token.as_str(), carol_token.as_str(), PASSWORD] {
        assert!(
            !everything.contains(secret),
            "a secret leaked into the audit log"
        );
    }
    app.stop().await;
}

/// (method, route, permission) for every route the OpenAPI document says needs a bearer token;
/// `authenticated` when it needs no particular permission.
async fn declared_routes(app: &TestApp) -> Vec<(String, String, String)> {
    let doc = body(
        app.call(Method::GET, "/api/v1/openapi.json", None, None)
            .await,
    )
    .await;
    let mut routes = Vec::new();
    for (path, operations) in doc["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let Some(security) = operation["security"].as_array() else {
                continue;
            };
            // routes for another kind of token (the usage widget's) are not in the table
            let Some(scopes) = security[0]["bearer"].as_array() else {
                continue;
            };
            let permission = scopes
                .first()
                .and_then(Value::as_str)
                .unwrap_or("authenticated");
            routes.push((method.to_uppercase(), path.clone(), permission.to_owned()));
        }
    }
    routes.sort();
    routes
}

/// The rows of the route table in docs/permissions.md.
fn documented_routes() -> Vec<(String, String, String)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/permissions.md");
    let text = std::fs::read_to_string(path).unwrap();
    let mut routes: Vec<(String, String, String)> = text
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let method = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let route = cells.get(2)?.strip_prefix("`/api/v1")?.strip_suffix('`')?;
            let permission = cells.get(3)?;
            let permission = if permission.starts_with("authenticated") {
                "authenticated".to_owned()
            } else {
                permission.split('`').nth(1)?.to_owned()
            };
            Some((method.to_owned(), format!("/api/v1{route}"), permission))
        })
        .collect();
    routes.sort();
    routes
}

async fn declared_permissions_are_documented_and_enforced(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let declared = declared_routes(&app).await;
    assert_eq!(
        documented_routes(),
        declared,
        "docs/permissions.md and the OpenAPI document disagree"
    );

    let (owner, org) = app.owner("owner@example.com", "Acme").await;
    let owner_id = user_id_of(&app, &owner).await;
    let platform = [
        "org:read",
        "org:write",
        "org:delete",
        "members:read",
        "members:write",
        "roles:read",
        "roles:write",
        "keys:read",
        "keys:write",
        "usage:read",
        "usage:write",
        "audit:read",
        "webhooks:read",
        "webhooks:write",
    ];
    let role = body(
        send(
            &app,
            Method::POST,
            &format!("/orgs/{org}/roles"),
            &owner,
            Some(json!({ "name": "probe", "permissions": platform })),
        )
        .await,
    )
    .await;
    let role_id = role["data"]["id"].as_str().unwrap().to_owned();
    let probe = app.member(&owner, &org, "probe@example.com", "probe").await;

    for (method, route, permission) in declared
        .iter()
        .filter(|(_, r, _)| r.starts_with("/api/v1/orgs/{org_id}"))
    {
        let path = route
            .trim_start_matches("/api/v1")
            .replace("{org_id}", &org)
            .replace("{user_id}", &owner_id)
            .replace("{role_id}", &role_id)
            .replace("{invitation_id}", "inv_01ARZ3NDEKTSV4RRFFQ69G5FAV")
            .replace("{key_id}", "key_01ARZ3NDEKTSV4RRFFQ69G5FAV")
            .replace("{webhook_id}", "whk_01ARZ3NDEKTSV4RRFFQ69G5FAV")
            .replace("{delivery_id}", "whd_01ARZ3NDEKTSV4RRFFQ69G5FAV");
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        // without the declared permission: refused, naming exactly it
        let without: Vec<&str> = platform
            .iter()
            .copied()
            .filter(|p| p != permission)
            .collect();
        let narrowed = send(
            &app,
            Method::PATCH,
            &format!("/orgs/{org}/roles/{role_id}"),
            &owner,
            Some(json!({ "permissions": without })),
        )
        .await;
        assert_eq!(narrowed.status(), 200);
        let refused = send(&app, method.clone(), &path, &probe, Some(json!({}))).await;
        assert_eq!(
            refused.status(),
            403,
            "{method} {route} without {permission}"
        );
        assert_eq!(
            body(refused).await["error"]["required_permission"],
            permission.as_str(),
            "{method} {route}"
        );
        // with it, that permission is no longer what stops the request
        let widened = send(
            &app,
            Method::PATCH,
            &format!("/orgs/{org}/roles/{role_id}"),
            &owner,
            Some(json!({ "permissions": platform })),
        )
        .await;
        assert_eq!(widened.status(), 200);
        if method == Method::DELETE && route == "/api/v1/orgs/{org_id}" {
            continue; // holding org:delete, the probe would delete the org the test runs in
        }
        let allowed = send(&app, method.clone(), &path, &probe, Some(json!({}))).await;
        if allowed.status() == 403 {
            assert_ne!(
                body(allowed).await["error"]["required_permission"],
                permission.as_str(),
                "{method} {route}"
            );
        }
    }
    // instance-wide routes refuse a customer's owner, naming the operator permission
    let instance_wide =
        |route: &str| route.starts_with("/api/v1/admin/") || route == "/api/v1/keys/verify";
    for (method, route, permission) in declared.iter().filter(|(_, r, _)| instance_wide(r)) {
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let path = route
            .trim_start_matches("/api/v1")
            .replace("{org_id}", &org);
        forbidden(
            send(&app, method, &path, &owner, Some(json!({}))).await,
            permission,
        )
        .await;
    }
    app.stop().await;
}
