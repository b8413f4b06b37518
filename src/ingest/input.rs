//! What a pipeline reads: the topics it subscribes to and the shape of
//! their payloads, as the configuration sets them (`input_topic`,
//! `input_format`, `ts_unit`, `tag_*`), parsed once when it loads.

use crate::ingest::format::{InputFormat, TsUnit};
use crate::ingest::kepware::TagId;
use crate::ingest::tag::TagKeys;
use crate::ingest::topic::TopicTemplate;

/// A pipeline's input.
#[derive(Debug, Clone)]
pub(crate) struct Input {
    /// `input_topic`: which device (and, for tags, which feature) a topic names.
    pub topic: TopicTemplate,
    /// The payload shape.
    pub format: InputFormat,
    /// The unit of its numeric timestamps.
    pub ts_unit: TsUnit,
    /// For `input_format = "tag"`: the payload's keys.
    pub tag_keys: TagKeys,
    /// For `input_format = "kepware"`: how a record's id names device and feature.
    pub tag_id: TagId,
    /// For a Sparkplug input (`spBv1.0/.../DDATA/...`): the same template for
    /// DBIRTH, which declares aliases and starting values.
    pub births: Option<TopicTemplate>,
}

impl Input {
    /// `input_topic` alone, in lineguard's own payload shape.
    #[cfg(test)]
    pub(crate) fn lineguard(topic: TopicTemplate) -> Input {
        Input {
            topic,
            format: InputFormat::Lineguard,
            ts_unit: TsUnit::Ms,
            tag_keys: TagKeys::default(),
            tag_id: TagId::default(),
            births: None,
        }
    }

    /// Every subscription filter.
    pub(crate) fn filters(&self) -> Vec<String> {
        let mut f = vec![self.topic.filter()];
        f.extend(self.births.as_ref().map(|t| t.filter()));
        f
    }

    /// Whether `topic` is one of these inputs.
    pub(crate) fn takes(&self, topic: &str) -> bool {
        self.topic.matches(topic) || self.births.as_ref().is_some_and(|t| t.matches(topic))
    }
}
