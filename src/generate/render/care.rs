//! The care of a long-term condition: the team that looks after it, the goal, and the plan
//! that ties them together, made when the condition is first recorded.

use super::Renderer;
use crate::generate::codes::{self, Concept};
use crate::generate::json::{Body, Json, array, codeable, coded, date, key, object, reference};
use crate::generate::plan::{ConditionPlan, DAY, EncounterPlan, PatientPlan, date_of};
use crate::generate::types::ResourceType;

/// How long a new goal is given.
const GOAL_DAYS: i64 = 180;

impl Renderer<'_> {
    /// The CareTeam, Goal and CarePlan of the condition just rendered.
    pub(super) fn care_plan(
        &mut self,
        plan: &PatientPlan,
        encounter: &EncounterPlan,
        condition: &ConditionPlan,
    ) {
        let condition_ref = self
            .condition_refs
            .last()
            .expect("the condition is rendered first")
            .clone();
        let team = self.care_team(plan, encounter, &condition_ref);
        let goal = self.goal(plan, encounter, condition, &condition_ref);
        let id = self.id();
        if !self.keeps(ResourceType::CarePlan) {
            return;
        }
        let (status, activity_status) = if plan.death.is_some() {
            ("completed", "stopped")
        } else {
            ("active", "in-progress")
        };
        let problem = plain(condition.snomed);
        let text = object([
            ("status", "generated".into()),
            (
                "div",
                format!(
                    "<div xmlns=\"http://www.w3.org/1999/xhtml\">Care plan for {problem}: \
                     counseling, healthy diet and exercise.</div>"
                )
                .into(),
            ),
        ]);
        let activities = codes::CARE_ACTIVITIES
            .iter()
            .map(|&activity| {
                object([(
                    "detail",
                    object([
                        ("code", codeable(codes::SNOMED, activity)),
                        ("status", activity_status.into()),
                    ]),
                )])
            })
            .collect::<Vec<_>>();
        let body = Body::new(ResourceType::CarePlan, id)
            .set("text", text)
            .identified()
            .set("status", status)
            .set("intent", "plan")
            .set(
                "category",
                array([
                    coded(codes::CARE_PLAN_CATEGORY, ASSESS_PLAN),
                    codeable(codes::SNOMED, codes::CHRONIC_CARE_PLAN),
                ]),
            )
            .set("subject", self.subject())
            .set("encounter", self.encounter.clone())
            .set("period", care_period(plan, encounter.start))
            .set("created", Json::DateTime(encounter.start))
            .set("careTeam", array([team]))
            .set("addresses", array([condition_ref]))
            .set("goal", array([goal]))
            .set("activity", activities);
        self.push(body);
    }

    /// The patient, their doctor and the doctor's organization; returns the reference to it.
    fn care_team(
        &mut self,
        plan: &PatientPlan,
        encounter: &EncounterPlan,
        condition: &Json,
    ) -> Json {
        let id = self.id();
        let team_ref = reference(key(ResourceType::CareTeam, &id));
        if !self.keeps(ResourceType::CareTeam) {
            return team_ref;
        }
        let organization = reference(self.pool.organization(encounter.organization).to_owned());
        let member = |role: Concept, member: Json| {
            object([
                ("role", array([codeable(codes::SNOMED, role)])),
                ("member", member),
            ])
        };
        let participants = array([
            member(codes::PATIENT_ROLE, self.subject()),
            member(codes::PROFESSIONAL_ROLE, self.practitioner(encounter)),
            member(codes::SERVICES_ROLE, organization.clone()),
        ]);
        let status = if plan.death.is_some() {
            "inactive"
        } else {
            "active"
        };
        let body = Body::new(ResourceType::CareTeam, id)
            .identified()
            .set("status", status)
            .set("subject", self.subject())
            .set("encounter", self.encounter.clone())
            .set("period", care_period(plan, encounter.start))
            .set("participant", participants)
            .set("reasonReference", array([condition.clone()]))
            .set("managingOrganization", array([organization]));
        self.push(body);
        team_ref
    }

    /// What the care of the condition aims at; returns the reference to it.
    fn goal(
        &mut self,
        plan: &PatientPlan,
        encounter: &EncounterPlan,
        condition: &ConditionPlan,
        condition_ref: &Json,
    ) -> Json {
        let id = self.id();
        let goal_ref = reference(key(ResourceType::Goal, &id));
        if !self.keeps(ResourceType::Goal) {
            return goal_ref;
        }
        let status = if plan.death.is_some() {
            "cancelled"
        } else {
            "active"
        };
        let due = (encounter.start + GOAL_DAYS * DAY).min(plan.history_end);
        let description = format!("Keep {} under control", plain(condition.snomed));
        let body = Body::new(ResourceType::Goal, id)
            .identified()
            .set("lifecycleStatus", status)
            .set("description", object([("text", description.into())]))
            .set("subject", self.subject())
            .set("startDate", date(date_of(encounter.start)))
            .set(
                "target",
                array([object([("dueDate", date(date_of(due)).into())])]),
            )
            .set("addresses", array([condition_ref.clone()]));
        self.push(body);
        goal_ref
    }
}

/// From the encounter that starts the care, to death if the patient died.
fn care_period(plan: &PatientPlan, start: i64) -> Json {
    match plan.death {
        Some(death) => object([
            ("start", Json::DateTime(start)),
            ("end", Json::DateTime(death)),
        ]),
        None => object([("start", Json::DateTime(start))]),
    }
}

/// A SNOMED CT display without its semantic tag: "Asthma (disorder)" is "asthma".
fn plain(concept: Concept) -> String {
    let name = concept
        .display
        .rsplit_once(" (")
        .map_or(concept.display, |(name, _)| name);
    name.to_lowercase()
}

const ASSESS_PLAN: Concept = Concept {
    code: "assess-plan",
    display: "Assessment and Plan of Treatment",
};
